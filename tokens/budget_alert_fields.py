"""What an organization or device says about its budget alerts, parsed and validated: thresholds
(the percentages of a spend cap at which operators are told, `50, 80, 100`; above 100 is allowed,
since with soft enforcement a cap is a budget spend may pass), the organization's webhook URL and
its alert recipients."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

AlertThresholds = tuple[int, ...]
MAX_THRESHOLD_PERCENT = 1000
WEBHOOK_SCHEMES = ("http", "https")


def parse_alert_thresholds(text: str) -> AlertThresholds:
    """Ascending, without repeats; raises ValueError naming the first part that is not a percentage."""
    values = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= MAX_THRESHOLD_PERCENT:
            raise ValueError(f"{part!r} is not a whole percentage from 1 to {MAX_THRESHOLD_PERCENT} (e.g. 50, 80, 100).")
        values.add(int(part))
    return tuple(sorted(values))


def validate_alert_thresholds(text: str) -> None:
    try:
        parse_alert_thresholds(text)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_webhook_url(url: str) -> None:
    """Only http and https: a file:, gopher: or ftp: URL must never reach the HTTP client."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in WEBHOOK_SCHEMES or not parts.hostname:
        raise ValidationError("A webhook URL must be http:// or https:// with a host name.")


def parse_alert_emails(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in re.split(r"[,\s]+", text) if part.strip()))


def validate_alert_emails(text: str) -> None:
    for address in parse_alert_emails(text):
        validate_email(address)
