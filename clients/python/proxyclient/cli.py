"""`python -m proxyclient token | env | status`: Claude Code's apiKeyHelper and a shell's view.

`token` prints a valid wrapper token and nothing else on stdout (Claude Code reads the whole of
stdout as the credential). Problems go to stderr with what to do, and the exit code says which
kind (errors.py): 2 configuration, 3 gateway down, 4 refused, 5 clock skew.

Claude Code runs the helper again when its TTL (CLAUDE_CODE_API_KEY_HELPER_TTL_MS, 5 minutes by
default) has passed, or at once after a 401. So `token` remembers which token it last printed and
when: asked again for the same token before the TTL is up, it takes that as a 401 (a revoked token
that still looks valid here) and renews instead of printing the rejected token again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import __version__, load_config
from .errors import ProxyClientError
from .grant import TokenGrant, format_timestamp
from .session import ProxySession
from .state import write_private
from .wire import describe_duration

HELPER_TTL_VARIABLE = "CLAUDE_CODE_API_KEY_HELPER_TTL_MS"
DEFAULT_HELPER_TTL_MS = 5 * 60 * 1000  # Claude Code's default
HELPER_MEMO_FILE = "helper-last-token.json"


@dataclass(frozen=True, slots=True)
class Invocation:
    """What a command needs besides the session."""

    out: TextIO
    clock: Callable[[], float]
    environ: Mapping[str, str]


def main(
    argv: list[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m proxyclient", description="Wrapper tokens for the LLM gateway.")
    parser.add_argument("--app-version", default=f"proxyclient-cli/{__version__}", help="reported to the gateway at bootstrap")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("token", help="print a valid wrapper token (for Claude Code's apiKeyHelper)")
    commands.add_parser("env", help="print ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN lines")
    commands.add_parser("status", help="show device, gateway, token expiry and gateway health")
    arguments = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        config = load_config(arguments.app_version, environ=environ)
        config.require_enabled()
        session = ProxySession(config, clock=clock)
        try:
            return COMMANDS[arguments.command](session, Invocation(out, clock, environ))
        finally:
            session.close()
    except ProxyClientError as exc:
        print(f"proxyclient: {exc.message}", file=err)
        if exc.hint:
            print(f"What to do: {exc.hint}", file=err)
        return exc.exit_code


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


def print_status(session: ProxySession, call: Invocation) -> int:
    """Reads the cache and asks /healthz; renews nothing. Exit 0 when the gateway is healthy."""
    out = call.out
    grant = session.cached_grant()
    now = call.clock()
    lines = [
        ("device", session.device_id),
        ("state", session.state_dir),
        ("gateway", session.config.bootstrap_url),
        ("proxy", grant.proxy_base_url if grant else "(not enrolled yet: run `python -m proxyclient token`)"),
        ("token", describe_expiry(grant.expires_at, now) if grant else "none"),
        ("refresh", describe_refresh(grant, now) if grant else "none"),
    ]
    exit_code = 0
    try:
        session.check_health()
        lines.append(("health", f"ok ({session.config.health_url})"))
    except ProxyClientError as exc:
        lines.append(("health", f"FAILED: {exc}"))
        exit_code = exc.exit_code
    for label, value in lines:
        print(f"{label + ':':<9}{value}", file=out)
    return exit_code


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


COMMANDS: dict[str, Callable[[ProxySession, Invocation], int]] = {
    "token": print_token,
    "env": print_env,
    "status": print_status,
}
