"""A wrapper/refresh token pair as the gateway granted it, and the arithmetic of when to renew it.

Times are on the local clock: when the gateway's Date header shows the clocks disagree, the
gateway's expiry times are shifted by the difference on arrival (`clock_offset`), so a skewed clock
still refreshes on time instead of looping or letting the token lapse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import UnexpectedResponse


@dataclass(frozen=True, slots=True)
class TokenGrant:
    wrapper_token: str
    refresh_token: str
    proxy_base_url: str  # the gateway root: ANTHROPIC_BASE_URL, without /v1
    expires_at: float  # unix seconds on the local clock
    refresh_expires_at: float | None
    received_at: float  # unix seconds on the local clock when the gateway answered
    clock_offset: float | None = None  # the gateway's clock minus ours on arrival; None: no Date header

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.received_at)

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return self.seconds_left(now) <= 0

    def refresh_lead(self, margin: float) -> float:
        """How long before expiry to refresh: the seed's hour, or half the lifetime of a token that
        lives less than two hours (else a short-lived token would be renewed on every check)."""
        return min(margin, self.lifetime / 2)

    def refresh_due_in(self, now: float, margin: float) -> float:
        """Seconds until a refresh is due; zero or less means now."""
        return self.seconds_left(now) - self.refresh_lead(margin)

    def refresh_token_usable(self, now: float) -> bool:
        return self.refresh_expires_at is None or self.refresh_expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenGrant:
        """Rebuild a cached grant; raises ValueError when the shape is not one this version wrote."""
        try:
            grant = cls(
                wrapper_token=str(data["wrapper_token"]),
                refresh_token=str(data["refresh_token"]),
                proxy_base_url=str(data["proxy_base_url"]),
                expires_at=float(data["expires_at"]),
                refresh_expires_at=None if data["refresh_expires_at"] is None else float(data["refresh_expires_at"]),
                received_at=float(data["received_at"]),
                clock_offset=None if data.get("clock_offset") is None else float(data["clock_offset"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cached token grant: {exc}") from exc
        if not grant.wrapper_token or not grant.refresh_token or not grant.proxy_base_url:
            raise ValueError("not a cached token grant: empty fields")
        return grant


def grant_from_response(body: Any, *, received_at: float, clock_offset: float | None) -> TokenGrant:
    """The 200 body of /bootstrap or /refresh, its times moved onto the local clock."""
    if not isinstance(body, dict):
        raise UnexpectedResponse("The gateway's token response is not a JSON object.")
    try:
        wrapper_token = body["wrapper_token"]
        refresh_token = body["refresh_token"]
        proxy_base_url = body["proxy_base_url"]
        expires_at = parse_timestamp(body["expires_at"])
        refresh_expires_at = parse_timestamp(body["refresh_expires_at"]) if body.get("refresh_expires_at") else None
    except (KeyError, ValueError, TypeError) as exc:
        raise UnexpectedResponse(f"The gateway's token response is missing or garbles a field ({exc}).") from exc
    if not all(isinstance(value, str) and value for value in (wrapper_token, refresh_token, proxy_base_url)):
        raise UnexpectedResponse("The gateway's token response has empty or non-string tokens.")
    return TokenGrant(
        wrapper_token=wrapper_token,
        refresh_token=refresh_token,
        proxy_base_url=proxy_base_url.rstrip("/"),
        expires_at=expires_at - (clock_offset or 0.0),
        refresh_expires_at=None if refresh_expires_at is None else refresh_expires_at - (clock_offset or 0.0),
        received_at=received_at,
        clock_offset=clock_offset,
    )


def parse_timestamp(value: Any) -> float:
    """ISO 8601 (`2025-11-11T20:00:00.000Z`); a timestamp without a zone is UTC."""
    if not isinstance(value, str):
        raise TypeError(f"timestamp {value!r} is not a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
