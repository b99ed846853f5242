"""Telling people about a budget alert: a signed webhook (the BUDGET_WEBHOOK_URL setting and/or the
organization's own) and an email (BUDGET_ALERT_EMAILS and/or the organization's recipients).

The webhook body is JSON; `X-Budget-Timestamp` carries the send time (epoch seconds) and
`X-Budget-Signature` is `sha256=` and the hex HMAC-SHA256, keyed by the webhook's secret, of
`<timestamp>.<body>`. A receiver recomputes it over the raw body, compares in constant time and
refuses old timestamps (replays). Each attempt is one `WebhookDelivery` row. The client follows no
redirect (a 3xx is a failed attempt: a receiver that moved must be reconfigured, not chased),
waits BUDGET_WEBHOOK_TIMEOUT_SECONDS at most, reads at most a few hundred bytes of the answer and
ignores proxy variables; only http and https URLs are posted to. The secret is never logged or stored
in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db.models import Max
from django.utils import timezone

from proxyproject.lib.encryption import SecretDecryptionFailed
from proxyproject.lib.logging import log_event
from tokens.budget_alert_fields import parse_alert_emails, validate_webhook_url
from tokens.budget_webhooks import organization_webhook_secret
from usage.models import BudgetAlert, WebhookDelivery, WebhookTarget

logger = logging.getLogger("usage.budget_delivery")
EVENT = "budget.threshold_crossed"
TIMESTAMP_HEADER = "X-Budget-Timestamp"
SIGNATURE_HEADER = "X-Budget-Signature"
EXCERPT_BYTES = 300
CENT = Decimal("0.01")
_PERIOD_NAMES = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    target: str
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PostOutcome:
    delivered: bool
    status_code: int | None
    error: str
    excerpt: str
    duration_ms: int


def alert_payload(alert: BudgetAlert) -> dict[str, object]:
    return {
        "event": EVENT,
        "id": str(alert.uuid),
        "scope": alert.scope,
        "subject": alert.subject,
        "period": alert.period,
        "period_start": alert.period_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threshold_percent": alert.threshold_percent,
        "cap": format(alert.cap, "f"),
        "spent": format(alert.spent.normalize(), "f"),
        "occurred_at": alert.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def sign_webhook_body(*, secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_endpoint(alert: BudgetAlert, target: str) -> WebhookEndpoint | None:
    """Where `target` points now (a secret rotated since the alert signs with the new one); None
    when it is no longer configured or its secret cannot be read."""
    if target == "setting":
        url, secret = settings.BUDGET_WEBHOOK_URL, settings.BUDGET_WEBHOOK_SECRET
    elif target == "organization" and alert.organization is not None:
        url = alert.organization.budget_webhook_url
        try:
            secret = organization_webhook_secret(alert.organization)
        except SecretDecryptionFailed:
            log_event(logger, "Budget webhook secret unreadable", logging.WARNING, organization=alert.organization.pk)
            return None
    else:
        return None
    return WebhookEndpoint(target, url, secret) if url and secret else None


def webhook_targets(alert: BudgetAlert) -> list[str]:
    return [target for target in WebhookTarget.values if webhook_endpoint(alert, target) is not None]


def next_attempt(alert: BudgetAlert, target: str) -> int:
    last = WebhookDelivery.objects.filter(alert=alert, target=target).aggregate(last=Max("attempt"))["last"]
    return (last or 0) + 1


def _excerpt(response: httpx.Response) -> str:
    read = b""
    for chunk in response.iter_raw():
        read += chunk
        if len(read) >= EXCERPT_BYTES:
            break
    return read[:EXCERPT_BYTES].decode(errors="replace")


def post_webhook(endpoint: WebhookEndpoint, body: bytes, timestamp: int) -> PostOutcome:
    started = time.monotonic()

    def outcome(delivered: bool, status: int | None, error: str, excerpt: str = "") -> PostOutcome:
        return PostOutcome(delivered, status, error[:300], excerpt, int((time.monotonic() - started) * 1000))

    try:
        validate_webhook_url(endpoint.url)
    except ValidationError:
        return outcome(False, None, "URL refused: only http and https URLs are posted to")
    headers = {
        "content-type": "application/json",
        "user-agent": "llm-gateway-budget-alerts",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_webhook_body(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    timeout = settings.BUDGET_WEBHOOK_TIMEOUT_SECONDS
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as client:
            with client.stream("POST", endpoint.url, content=body, headers=headers) as response:
                excerpt = _excerpt(response)
    except httpx.HTTPError as exc:
        return outcome(False, None, f"{type(exc).__name__}: {exc}")
    if response.is_redirect:
        return outcome(False, response.status_code, "redirect not followed", excerpt)
    if not response.is_success:
        return outcome(False, response.status_code, f"HTTP {response.status_code}", excerpt)
    return outcome(True, response.status_code, "", excerpt)


def deliver_budget_webhook(
    *, alert: BudgetAlert, target: str, attempt: int, clock: Callable[[], float] = time.time
) -> WebhookDelivery | None:
    """Post the alert to one webhook once and record the attempt; None when that webhook is no
    longer configured. The Celery task (with its retries) and the admin's Redeliver both call this."""
    endpoint = webhook_endpoint(alert, target)
    if endpoint is None:
        return None
    body = orjson.dumps(alert_payload(alert))
    result = post_webhook(endpoint, body, int(clock()))
    delivery = WebhookDelivery.objects.create(
        alert=alert,
        target=target,
        url=endpoint.url,
        attempt=attempt,
        delivered=result.delivered,
        status_code=result.status_code,
        error=result.error,
        response_excerpt=result.excerpt,
        duration_ms=result.duration_ms,
        attempted_at=timezone.now(),
    )
    log_event(
        logger,
        "Budget webhook delivered" if result.delivered else "Budget webhook failed",
        logging.INFO if result.delivered else logging.WARNING,
        alert=str(alert.uuid),
        target=target,
        host=urlsplit(endpoint.url).hostname,
        attempt=attempt,
        status=result.status_code,
        error=result.error,
    )
    return delivery


def alert_recipients(alert: BudgetAlert) -> tuple[str, ...]:
    own = parse_alert_emails(alert.organization.budget_alert_emails) if alert.organization is not None else ()
    return tuple(dict.fromkeys((*settings.BUDGET_ALERT_EMAILS, *own)))


def send_budget_alert_email(*, alert: BudgetAlert) -> int:
    """One message to every recipient; returns how many were addressed (0: nobody to tell)."""
    recipients = alert_recipients(alert)
    if not recipients:
        return 0
    what = "device" if alert.scope == "device" else "organization"
    period = _PERIOD_NAMES.get(alert.period, alert.period)
    subject = f"Budget alert: {what} {alert.subject} reached {alert.threshold_percent}% of its {period} cap"
    body = (
        f"The {what} {alert.subject} has spent ${alert.spent.quantize(CENT)} of its "
        f"{period} spend cap of ${alert.cap} ({alert.threshold_percent}% threshold) in the period that began "
        f"{alert.period_start:%Y-%m-%d %H:%M} UTC.\n\nAlert id: {alert.uuid}\n"
    )
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, list(recipients))
    return len(recipients)
