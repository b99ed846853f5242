"""`proxyclient token | env | status | setup | login`: Claude Code's apiKeyHelper, a shell's view,
setup, and a person's sign-in.

`token` prints a valid wrapper token and nothing else on stdout (Claude Code reads the whole of
stdout as the credential). Problems go to stderr with what to do, and the exit code says which
kind (errors.py): 1 unexpected answer, 2 configuration, 3 gateway down, 4 refused (blocked,
pending approval, bad enrollment secret, token refused), 5 clock skew.

Claude Code runs the helper again when its TTL (CLAUDE_CODE_API_KEY_HELPER_TTL_MS, 5 minutes by
default) has passed, or at once after a 401. So `token` remembers which token it last printed and
when: asked again for the same token before the TTL is up, it takes that as a 401 (a revoked token
that still looks valid here) and renews instead of printing the rejected token again.

Where the gateway enrolls devices by signing their person in, `login` does that at once, and every
other command does it when the gateway asks for it: the URL and code go to stderr (never stdout,
which is the credential), the browser opens at the URL where it can, and the command goes on once
the person approved.

Claude Code (2.1.x) gives apiKeyHelper 10 minutes, then reports "apiKeyHelper failed: timed out"
and sends its request without a key; it shows the helper's stderr only then, not while it waits. So
`token` waits for a sign-in at most HELPER_SIGN_IN_WAIT_SECONDS, ending with a message Claude Code
shows (run `proxyclient login`), and when no browser opens and stderr is no terminal (nobody could
read the code) it says so at once instead of waiting for an approval nobody can give.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import claude_code
from .config import __version__, load_config
from .errors import ProxyClientError, SignInRequired
from .grant import TokenGrant, format_timestamp
from .session import ProxySession, SignInPresenter, SignInPrompt
from .state import write_private
from .wire import describe_duration

HELPER_TTL_VARIABLE = "CLAUDE_CODE_API_KEY_HELPER_TTL_MS"
DEFAULT_HELPER_TTL_MS = 5 * 60 * 1000  # Claude Code's default
HELPER_MEMO_FILE = "helper-last-token.json"
DEFAULT_APP_NAME = "proxyclient"
HELPER_SIGN_IN_WAIT_SECONDS = 9 * 60  # Claude Code's apiKeyHelper timeout is 10 minutes


@dataclass(frozen=True, slots=True)
class Invocation:
    """What a command needs besides the session."""

    out: TextIO
    err: TextIO
    clock: Callable[[], float]
    environ: Mapping[str, str]
    arguments: argparse.Namespace
    opener: Callable[[str], object] = webbrowser.open


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyclient", description="Wrapper tokens for the LLM gateway.")
    parser.add_argument("--version", action="version", version=f"proxyclient {__version__}")
    parser.add_argument("--bootstrap-url", help="the gateway's /bootstrap URL (default: PROXY_BOOTSTRAP_URL); implies proxy mode")
    parser.add_argument("--home", help="state directory: device id and encrypted tokens (default: PROXYCLIENT_HOME)")
    parser.add_argument("--no-keyring", action="store_true", help="keep the state key in a 0600 file, not the OS keyring")
    parser.add_argument("--app-name", help="reported at bootstrap (default: PROXYCLIENT_APP_NAME, else proxyclient)")
    parser.add_argument("--app-version", help=f"reported at bootstrap (default: PROXYCLIENT_APP_VERSION, else {__version__})")
    naming = parser.add_mutually_exclusive_group()
    naming.add_argument("--device-name", help="reported at bootstrap (default: PROXYCLIENT_DEVICE_NAME, else the host name)")
    naming.add_argument("--no-device-name", action="store_true", help="report no device name")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("token", help="print a valid wrapper token (for Claude Code's apiKeyHelper)")
    commands.add_parser("login", help="sign in with your company account on this device")
    commands.add_parser("env", help="print ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN lines")
    status = commands.add_parser("status", help="ask the gateway for this device's status, policy and spend")
    status.add_argument("--offline", action="store_true", help="only the local view: device, cached token; no network")
    setup = commands.add_parser("setup", help="configure a tool to use the gateway").add_subparsers(dest="target", required=True)
    claude = setup.add_parser("claude-code", help="write Claude Code's settings (apiKeyHelper, base URL, models)")
    claude.add_argument("--scope", choices=claude_code.SCOPES, default="user", help="which settings file (default: user)")
    claude.add_argument("--dry-run", action="store_true", help="print the merged settings instead of writing them")
    setup.add_parser("env", help="print shell exports for the Anthropic SDKs and CLIs")
    return parser


def main(
    argv: list[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
    opener: Callable[[str], object] = webbrowser.open,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """`opener` opens the sign-in URL in a browser and `sleep` waits between polls (tests replace both)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    arguments = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        config = load_config(
            arguments.app_version or environ.get("PROXYCLIENT_APP_VERSION") or __version__,
            environ=environ,
            **config_overrides(arguments, environ),
        )
        config.require_enabled()
        helper = arguments.command == "token"
        session = ProxySession(
            config,
            clock=clock,
            sign_in_presenter=terminal_sign_in(err, opener, unattended=helper and not err.isatty()),
            sleep=sleep,
            sign_in_wait=HELPER_SIGN_IN_WAIT_SECONDS if helper else None,
        )
        try:
            return command_for(arguments)(session, Invocation(out, err, clock, environ, arguments, opener))
        finally:
            session.close()
    except ProxyClientError as exc:
        print(f"proxyclient: {exc.message}", file=err)
        if exc.hint:
            print(f"What to do: {exc.hint}", file=err)
        return exc.exit_code


def run() -> None:
    """The `proxyclient` console script."""
    sys.exit(main())


def config_overrides(arguments: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {"app_name": arguments.app_name or environ.get("PROXYCLIENT_APP_NAME") or DEFAULT_APP_NAME}
    if arguments.bootstrap_url:
        overrides.update(bootstrap_url=arguments.bootstrap_url, enabled=True)
    if arguments.home:
        overrides["state_dir"] = Path(arguments.home).expanduser()
    if arguments.no_keyring:
        overrides["use_keyring"] = False
    if arguments.no_device_name:
        overrides["device_name"] = ""
    elif arguments.device_name is not None:
        overrides["device_name"] = arguments.device_name
    return overrides


def command_for(arguments: argparse.Namespace) -> Callable[[ProxySession, Invocation], int]:
    if arguments.command == "setup":
        return setup_claude_code if arguments.target == "claude-code" else print_shell_exports
    if arguments.command == "status":
        return print_local_status if arguments.offline else print_status
    return {"token": print_token, "env": print_env, "login": log_in}[arguments.command]


def terminal_sign_in(err: TextIO, opener: Callable[[str], object], *, unattended: bool = False) -> SignInPresenter:
    """`unattended`: nobody reads stderr while the command runs (Claude Code's apiKeyHelper), so
    without a browser the sign-in cannot happen and the command says so at once."""

    def present(prompt: SignInPrompt) -> None:
        print(f"proxyclient: sign in with your company account: open {prompt.verification_uri}", file=err)
        if prompt.user_code:
            print(f"proxyclient: and enter the code {prompt.user_code}", file=err)
        try:
            opened = opener(prompt.verification_uri_complete) is not False  # webbrowser.open: False when none
            failure = "no browser found"
        except Exception as exc:  # no browser here (a server, a container): the lines above suffice
            opened, failure = False, type(exc).__name__
        if not opened and unattended:
            raise SignInRequired(
                f"A sign-in is needed and no browser could be opened ({failure}).",
                status=403,
                error_code="sign_in_required",
                hint="Run `proxyclient login` in a terminal (it shows the address and code to sign in with), then try again.",
            )
        if not opened:
            print(f"proxyclient: could not open a browser ({failure}); open the address yourself", file=err)
        print("proxyclient: waiting for the sign-in to be approved...", file=err, flush=True)

    return present


def log_in(session: ProxySession, call: Invocation) -> int:
    grant = session.sign_in(terminal_sign_in(call.err, call.opener))
    print(
        f"Signed in on device {session.device_id}; the token is {describe_expiry(grant.expires_at, call.clock())}.", file=call.out
    )
    return 0


def print_token(session: ProxySession, call: Invocation) -> int:
    token = session.token()
    memo_path = Path(session.state_dir) / HELPER_MEMO_FILE
    now = call.clock()
    if printed_recently(memo_path, token, now=now, ttl=helper_ttl_seconds(call.environ)):
        token = session.renew_rejected(token).wrapper_token
    write_private(memo_path, json.dumps({"token_sha256": fingerprint(token), "printed_at": now}).encode())
    print(token, file=call.out)
    return 0


def helper_ttl_seconds(environ: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(environ.get(HELPER_TTL_VARIABLE) or DEFAULT_HELPER_TTL_MS) / 1000)
    except ValueError:
        return DEFAULT_HELPER_TTL_MS / 1000


def printed_recently(memo_path: Path, token: str, *, now: float, ttl: float) -> bool:
    try:
        memo = json.loads(memo_path.read_text())
        return memo["token_sha256"] == fingerprint(token) and 0 <= now - float(memo["printed_at"]) < ttl
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return False


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def print_env(session: ProxySession, call: Invocation) -> int:
    token = session.token()
    print(f"ANTHROPIC_BASE_URL={session.base_url}", file=call.out)
    print(f"ANTHROPIC_AUTH_TOKEN={token}", file=call.out)
    return 0


def print_shell_exports(session: ProxySession, call: Invocation) -> int:
    """`eval "$(proxyclient setup env)"`: the SDKs and `claude` in this shell use the gateway. The
    token is the current one; a shell that lives longer than it runs this again."""
    token = session.token()
    models = claude_code.model_overrides(session.device_status()["policy"]["allowed_models"], session.model_ids())
    exports = {"ANTHROPIC_BASE_URL": session.base_url, "ANTHROPIC_AUTH_TOKEN": token, **models}
    expires = describe_expiry(session.grant.expires_at, call.clock()) if session.grant else "unknown"
    print(f"# proxyclient {__version__}: device {session.device_id}; the token is {expires}", file=call.out)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}", file=call.out)
    return 0


def setup_claude_code(session: ProxySession, call: Invocation) -> int:
    grant = session.renew_if_due()
    models = claude_code.model_overrides(session.device_status()["policy"]["allowed_models"], session.model_ids())
    ours = claude_code.gateway_settings(
        helper=claude_code.helper_command(session.config),
        base_url=grant.proxy_base_url,
        ttl_ms=claude_code.helper_ttl_ms(grant, session.config.refresh_margin),
        models=models,
    )
    path = claude_code.settings_path(call.arguments.scope, home=Path.home(), project=Path.cwd())
    merged = claude_code.merge_settings(claude_code.read_settings(path), ours)
    text = json.dumps(merged, indent=2) + "\n"
    if call.arguments.dry_run:
        print(f"# would write {path}", file=call.out)
        print(text, end="", file=call.out)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text.encode())
    print(f"Wrote {path}: Claude Code now gets its key from `{ours['apiKeyHelper']}`.", file=call.out)
    return 0


def print_local_status(session: ProxySession, call: Invocation) -> int:
    """`status --offline`: the cache only; no network. Exit 0."""
    for label, value in local_lines(session, call.clock()):
        print(f"{label + ':':<9}{value}", file=call.out)
    return 0


def print_status(session: ProxySession, call: Invocation) -> int:
    """The local view, then what the gateway says (GET /device) and /healthz. Exit 0 when the
    device is active and the gateway healthy; otherwise the failure's exit code (errors.py)."""
    report: dict[str, Any] | None = None
    failure: ProxyClientError | None = None
    try:
        report = session.device_status()
    except ProxyClientError as exc:
        failure = exc
    lines = local_lines(session, call.clock())
    lines += gateway_lines(report) if report is not None else [("status", f"REFUSED or FAILED: {failure}")]
    exit_code = failure.exit_code if failure is not None else 0
    try:
        session.check_health()
        lines.append(("health", f"ok ({session.config.health_url})"))
    except ProxyClientError as exc:
        lines.append(("health", f"FAILED: {exc}"))
        exit_code = exit_code or exc.exit_code
    for label, value in lines:
        print(f"{label + ':':<9}{value}", file=call.out)
    return exit_code


def local_lines(session: ProxySession, now: float) -> list[tuple[str, str]]:
    grant = session.grant or session.cached_grant()
    return [
        ("device", session.device_id),
        ("state", session.state_dir),
        ("gateway", session.config.bootstrap_url),
        ("proxy", grant.proxy_base_url if grant else "(not enrolled yet: run `proxyclient token`)"),
        ("token", describe_expiry(grant.expires_at, now) if grant else "none"),
        ("refresh", describe_refresh(grant, now) if grant else "none"),
    ]


def gateway_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    policy, spend = report["policy"], report["spend"]
    named = ", ".join(part for part in (report.get("device_name"), report.get("app_name"), report.get("os")) if part)
    return [
        ("status", f"{report['status']}" + (f" ({named})" if named else "")),
        ("org", report.get("organization") or "none"),
        ("models", ", ".join(policy["allowed_models"]) or "all"),
        ("limits", describe_limits(policy)),
        ("today", describe_spend(spend["day"])),
        ("month", describe_spend(spend["month"])),
    ]


def describe_limits(policy: dict[str, Any]) -> str:
    tokens = f"{policy['tokens_per_minute']} tokens/min" if policy["tokens_per_minute"] else "no token limit"
    return f"{policy['requests_per_window']} requests per {policy['window_ms'] / 1000:g} s, {tokens}"


def describe_spend(period: dict[str, Any]) -> str:
    cap = f"of ${period['cap_usd']} cap" if period["cap_usd"] is not None else "(no cap)"
    return f"${float(period['spent_usd']):.4f} {cap}, resets {period['resets_at']}"


def describe_expiry(expires_at: float, now: float) -> str:
    left = expires_at - now
    if left <= 0:
        return f"expired {describe_duration(-left)} ago ({format_timestamp(expires_at)}); the next use renews it"
    return f"valid until {format_timestamp(expires_at)} (in {describe_duration(left)})"


def describe_refresh(grant: TokenGrant, now: float) -> str:
    if grant.refresh_expires_at is None:
        return "refresh token without expiry"
    if not grant.refresh_token_usable(now):
        return "refresh token expired; the next use bootstraps again"
    return f"refresh token valid until {format_timestamp(grant.refresh_expires_at)}"
