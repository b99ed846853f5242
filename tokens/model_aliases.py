"""Model aliases: a device or organization maps requested model patterns to the model it is served
(`claude-opus-* = claude-sonnet-4-5`), so a client's default model (Claude Code asks for Opus)
works for a device limited to Sonnet. The gateway applies them before the allowlist and checks the
served model, so an alias never lets a device reach a model its allowlist does not name.

Written one per line (or comma-separated) as `pattern = model`; patterns are fnmatch-style and
the first that matches wins, the device's rules before its organization's.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError

ModelAliases = tuple[tuple[str, str], ...]
_SERVED_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
_PATTERN = re.compile(r"^[A-Za-z0-9*?\[\]._:@-]{1,200}$")


def parse_model_aliases(text: str) -> ModelAliases:
    """Raises ValueError naming the first rule that is not `pattern = model`."""
    rules = []
    for part in re.split(r"[,\n]", text):
        rule = part.strip()
        if not rule:
            continue
        pattern, equals, served = (piece.strip() for piece in rule.partition("="))
        if not equals or not _PATTERN.match(pattern) or not _SERVED_MODEL.match(served):
            raise ValueError(f"{rule!r} is not `pattern = model` (e.g. claude-opus-* = claude-sonnet-4-5).")
        rules.append((pattern, served))
    return tuple(rules)


def validate_model_aliases(text: str) -> None:
    try:
        parse_model_aliases(text)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def served_model(aliases: ModelAliases, requested: str) -> str:
    """The model a request for `requested` is served: the first matching rule's, else itself."""
    for pattern, served in aliases:
        if fnmatchcase(requested, pattern):
            return served
    return requested
