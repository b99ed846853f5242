"""Identifiers clients choose (device id, app version, user label) and the model names they send:
text that operators read in the admin, the logs and the metrics, so it must look like what it is.

An identifier is NFC-normalised, trimmed and printable: no control characters (a newline would
forge a log line), no format characters such as the bidi controls U+202A-202E, U+2066-2069 and the
marks U+200E/U+200F (which make `1-VED-TR` display as `RT-DEV-1`), no zero-width or non-ASCII
spaces. `str.isprintable()` is exactly that set: it refuses the Unicode categories Cc, Cf, Cs, Co,
Cn, Zl, Zp and every Zs but the ASCII space.

Two entry points: `clean_identifier` for values this service stores (it normalises, so `rt-dev-1 `
and `rt-dev-1` are one device), `require_clean_identifier` for values passed through unchanged (a
model name is forwarded upstream byte for byte, so it is refused rather than rewritten). Plain
functions with no Django import beyond the error type, so the gateway can call them.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

from proxyproject.lib.errors import InvalidRequest


def identifier_problem(value: str) -> str | None:
    """Why `value` is not a clean identifier as it stands, or None."""
    if not value:
        return "must not be empty"
    for position, char in enumerate(value):
        if not char.isprintable():
            return f"must not contain control or invisible characters (U+{ord(char):04X} at position {position})"
    if value != value.strip():
        return "must not start or end with spaces"
    if not unicodedata.is_normalized("NFC", value):
        return "must be NFC-normalised Unicode"
    return None


def clean_identifier(value: str, *, field: str, max_length: int) -> str:
    """`value` normalised (NFC, trimmed) and checked; InvalidRequest naming `field` if it is not an
    identifier."""
    cleaned = unicodedata.normalize("NFC", value).strip()
    problem = identifier_problem(cleaned)
    if problem is None and len(cleaned) > max_length:
        problem = f"must be at most {max_length} characters"
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}.")
    return cleaned


def require_clean_identifier(value: str | None, *, field: str) -> None:
    """Refuse a passed-through value (None: absent, nothing to check) that is not already clean."""
    if value is None:
        return
    problem = identifier_problem(value)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}.")


def validate_identifier(value: str) -> None:
    """Model-field validator, for what operators type in the admin."""
    if value:
        problem = identifier_problem(value)
        if problem is not None:
            raise ValidationError(f"{problem[0].upper()}{problem[1:]}.")
