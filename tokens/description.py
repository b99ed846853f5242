"""What a device says about itself at bootstrap (device name, app name, OS), for operators to tell
devices apart in the admin.

The caller chooses this text, so it is treated as an attacker's: the body limit bounds its size
before parsing and each field has a length cap; it must be a clean identifier (tokens.identifiers:
no control or invisible characters, trimmed, NFC). On top, no markup characters (`<`, `>`, `"` and
the backtick): the admin escapes what it shows, but the same text reaches logs, exports and whatever
an operator pastes it into, and no host or app name needs them (an apostrophe stays allowed: macOS
names computers "Ada's MacBook"). A leading `=`, `+`, `-` or `@` is
refused too, since a spreadsheet opening an export would run it as a formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError

from proxyproject.lib.errors import InvalidRequest
from tokens.identifiers import clean_identifier, identifier_problem

DEVICE_NAME_MAX_LENGTH = 100
APP_NAME_MAX_LENGTH = 64
OS_MAX_LENGTH = 64
MARKUP_CHARACTERS = frozenset('<>"`')
FORMULA_PREFIXES = ("=", "+", "-", "@")


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    """Empty fields were not sent; they leave what the device said before unchanged."""

    device_name: str = ""
    app_name: str = ""
    os: str = ""

    def changed_fields(self) -> dict[str, str]:
        fields = {"device_name": self.device_name, "app_name": self.app_name, "os": self.os}
        return {name: value for name, value in fields.items() if value}


NOT_DESCRIBED = DeviceDescription()  # a bootstrap that says nothing about the device


def description_problem(value: str) -> str | None:
    """Why `value` is not acceptable device-described text, or None."""
    problem = identifier_problem(value)
    if problem is not None:
        return problem
    markup = sorted(set(value) & MARKUP_CHARACTERS)
    if markup:
        return f"must not contain {' '.join(markup)}"
    if value.startswith(FORMULA_PREFIXES):
        return "must not start with = + - or @"
    return None


def clean_description(value: str, *, field: str, max_length: int) -> str:
    cleaned = clean_identifier(value, field=field, max_length=max_length)
    problem = description_problem(cleaned)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}.")
    return cleaned


def validate_description(value: str) -> None:
    """Model-field validator (the admin, full_clean)."""
    if value:
        problem = description_problem(value)
        if problem is not None:
            raise ValidationError(f"{problem[0].upper()}{problem[1:]}.")
