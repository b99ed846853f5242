"""Claude Code's settings for the gateway: `proxyclient setup claude-code` writes them.

Claude Code reads `apiKeyHelper` (a shell command whose stdout is the credential, run again after
CLAUDE_CODE_API_KEY_HELPER_TTL_MS or at once after a 401) and the `env` block of its settings files.
The helper is the installed `proxyclient` by absolute path, with the gateway and the state directory
on its command line: Claude Code runs it from whatever directory it was started in, with no `.env`
there and perhaps without the user's shell variables.

Settings are merged, never replaced: keys this module does not own (permissions, hooks, other env
variables) are kept as they were.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ProxyConfig
from .errors import ConfigurationError
from .grant import TokenGrant

SCOPES = ("user", "project", "local")
# The models Claude Code asks for when ANTHROPIC_MODEL / ANTHROPIC_SMALL_FAST_MODEL are unset: the
# main model and the small one it uses for titles and summaries. The default depends on Claude Code's
# version and the account's plan (claude-opus-4-8 for the current one, as seen through the gateway;
# Sonnet 4.5 for earlier ones), so a variable is set when the allowlist excludes any of its defaults.
CLAUDE_CODE_DEFAULT_MODELS = {
    "ANTHROPIC_MODEL": ("claude-opus-4-8", "claude-sonnet-4-5-20250929"),
    "ANTHROPIC_SMALL_FAST_MODEL": ("claude-haiku-4-5-20251001",),
}
PREFERRED_FAMILIES = {"ANTHROPIC_MODEL": ("sonnet", "opus", ""), "ANTHROPIC_SMALL_FAST_MODEL": ("haiku", "sonnet", "")}
MIN_HELPER_TTL_MS = 1000


def settings_path(scope: str, *, home: Path, project: Path) -> Path:
    """user: ~/.claude/settings.json; project: .claude/settings.json (shared with the team);
    local: .claude/settings.local.json (this machine only, git-ignored by Claude Code)."""
    if scope == "user":
        return home / ".claude" / "settings.json"
    if scope == "project":
        return project / ".claude" / "settings.json"
    if scope == "local":
        return project / ".claude" / "settings.local.json"
    raise ConfigurationError(f"Unknown scope {scope!r}.", hint=f"Use one of: {', '.join(SCOPES)}.")


def helper_command(config: ProxyConfig, *, executable: str | None = None) -> str:
    """The shell command Claude Code runs for a token: this installation of proxyclient, absolute,
    aimed at this gateway and this state directory whatever Claude Code's working directory."""
    program = [executable] if executable else installed_command()
    options = ["--bootstrap-url", config.bootstrap_url, "--home", str(Path(config.state_dir).resolve())]
    if not config.use_keyring:
        options.append("--no-keyring")
    return shlex.join([*program, *options, "token"])


def installed_command() -> list[str]:
    """The console script when this process is it, else this interpreter with `-m proxyclient`."""
    launched = Path(sys.argv[0])
    if launched.name in ("proxyclient", "proxyclient.exe") and launched.is_file():
        return [str(launched.resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "proxyclient"]


def helper_ttl_ms(grant: TokenGrant, refresh_margin: float) -> int:
    """Half the window in which `proxyclient token` hands out a token before renewing it: Claude
    Code then always asks again while the token it holds still has time left."""
    return max(MIN_HELPER_TTL_MS, int(grant.refresh_lead(refresh_margin) * 1000 / 2))


def model_overrides(allowed_patterns: Sequence[str], available: Sequence[str]) -> dict[str, str]:
    """ANTHROPIC_MODEL / ANTHROPIC_SMALL_FAST_MODEL for each of Claude Code's default models that the
    device's allowlist excludes (empty allowlist: every model allowed, nothing to set), chosen among
    the allowed models the gateway lists, newest first, by family."""
    if not allowed_patterns:
        return {}
    allowed = [model for model in available if is_allowed(model, allowed_patterns)]
    overrides: dict[str, str] = {}
    for variable, defaults in CLAUDE_CODE_DEFAULT_MODELS.items():
        if all(is_allowed(default, allowed_patterns) for default in defaults):
            continue
        choice = next((model for family in PREFERRED_FAMILIES[variable] for model in allowed if family in model), None)
        if choice is None:
            raise ConfigurationError(
                f"This device may use no model the gateway lists (allowed: {', '.join(allowed_patterns)}).",
                hint="Ask the gateway's operator to allow a model for this device.",
            )
        overrides[variable] = choice
    return overrides


def is_allowed(model: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


def gateway_settings(*, helper: str, base_url: str, ttl_ms: int, models: dict[str, str]) -> dict[str, Any]:
    return {
        "apiKeyHelper": helper,
        "env": {"ANTHROPIC_BASE_URL": base_url, "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": str(ttl_ms), **models},
    }


def read_settings(path: Path) -> dict[str, Any]:
    """The settings file as a JSON object; {} when there is none. A file that is not a JSON object
    is an error, not something to overwrite."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        settings = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        hint = "Fix or move the file, then run setup again."
        raise ConfigurationError(f"{path} is not valid JSON ({exc}).", hint=hint) from None
    if not isinstance(settings, dict):
        raise ConfigurationError(f"{path} does not hold a JSON object.", hint="Fix or move the file, then run setup again.")
    return settings


def merge_settings(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """`existing` with our keys set: top-level keys replaced, the `env` block merged key by key.
    Model variables from an earlier setup that the allowlist no longer needs are left to the user."""
    merged = dict(existing)
    for key, value in ours.items():
        if key == "env" and isinstance(existing.get("env"), dict):
            merged["env"] = {**existing["env"], **value}
        else:
            merged[key] = value
    return merged
