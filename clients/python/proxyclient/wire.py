"""The gateway's client endpoints on the wire: POST /bootstrap, POST {proxy_base_url}/refresh,
GET /healthz, and a person's sign-in (POST /auth/oidc/start and /auth/oidc/poll). Transport failures and the gateway's error envelope become the types in errors.py
here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import ProxyConfig, __version__
from .description import operating_system
from .errors import (
    BootstrapSecretInvalid,
    ClockSkewError,
    DeviceBlocked,
    DevicePendingApproval,
    DeviceSecretRejected,
    EnrollmentRateLimited,
    EnrollmentRefused,
    GatewayRefused,
    GatewayUnreachable,
    PersonBlocked,
    ProxyClientError,
    RefreshRejected,
    SignInDenied,
    SignInExpired,
    SignInFailed,
    SignInNotEnabled,
    SignInRequired,
    TokenRejected,
    UnexpectedResponse,
)
from .grant import TokenGrant, format_timestamp, grant_from_response

REFUSALS_BY_CODE: dict[str, type[GatewayRefused]] = {
    "bootstrap_secret_invalid": BootstrapSecretInvalid,
    "device_secret_invalid": DeviceSecretRejected,
    "device_pending_approval": DevicePendingApproval,
    "device_blocked": DeviceBlocked,
    "enrollment_rate_limited": EnrollmentRateLimited,
    "sign_in_required": SignInRequired,
    "sign_in_denied": SignInDenied,
    "sign_in_expired": SignInExpired,
    "person_blocked": PersonBlocked,
    "sign_in_not_enabled": SignInNotEnabled,
}
DATE_HEADER_RESOLUTION = 1.0  # HTTP dates have whole seconds


class GatewayApi:
    """One keep-alive connection pool for the client's own calls (not the SDK's)."""

    def __init__(self, config: ProxyConfig, *, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._http = httpx.Client(
            timeout=config.request_timeout,
            headers={"user-agent": f"proxyclient/{__version__} app/{config.app_version}"},
        )

    def close(self) -> None:
        self._http.close()

    def bootstrap(self, *, device_id: str, device_secret: str) -> tuple[TokenGrant, str | None]:
        """Enroll (or re-enroll) this device. Returns the grant and the device secret the gateway
        generated, if it generated one (it does not when the client sends its own)."""
        headers = {"x-bootstrap-secret": self._config.bootstrap_secret} if self._config.bootstrap_secret else {}
        payload = {
            "device_id": device_id,
            "app_version": self._config.app_version,
            "device_secret": device_secret,
            **device_description(self._config),
        }
        response = self._send("POST", self._config.bootstrap_url, json=payload, headers=headers)
        if response.status_code != 200:
            raise refusal_from_response(response, refused=EnrollmentRefused, subject=f"enroll device {device_id}")
        body = read_json(response)
        grant = self._grant_from(response, body)
        generated = body.get("device_secret") if isinstance(body.get("device_secret"), str) else None
        return grant, generated

    def sign_in_start(self, *, device_id: str, device_secret: str, redirect_uri: str) -> dict[str, Any]:
        """What the person must see (verification_uri and user_code for the device grant, an
        authorization_url for the code flow, which returns to `redirect_uri`) and the handle to poll
        with. The gateway picks the device grant where the provider offers it."""
        payload = {
            "device_id": device_id,
            "app_version": self._config.app_version,
            "device_secret": device_secret,
            "redirect_uri": redirect_uri,
            **device_description(self._config),
        }
        response = self._send("POST", f"{gateway_root(self._config.bootstrap_url)}/auth/oidc/start", json=payload)
        if response.status_code != 200:
            raise refusal_from_response(response, refused=SignInFailed, subject="start a sign-in")
        return read_json(response)

    def sign_in_poll(
        self, handle: str, *, code: str | None = None, state: str | None = None
    ) -> tuple[TokenGrant, str | None] | float:
        """The grant and a generated device secret once the person approved (for the code flow:
        with the redirect's `code` and `state`); else the seconds to wait before the next poll."""
        body = {"sign_in": handle, **({"code": code, "state": state} if code is not None else {})}
        response = self._send("POST", f"{gateway_root(self._config.bootstrap_url)}/auth/oidc/poll", json=body)
        if response.status_code == 202:
            interval = read_json(response).get("interval")
            return float(interval) if isinstance(interval, int | float) else 5.0
        if response.status_code != 200:
            raise refusal_from_response(response, refused=SignInFailed, subject="finish the sign-in")
        body = read_json(response)
        generated = body.get("device_secret") if isinstance(body.get("device_secret"), str) else None
        return self._grant_from(response, body), generated

    def refresh(self, grant: TokenGrant) -> TokenGrant:
        response = self._send("POST", f"{grant.proxy_base_url}/refresh", json={"refresh_token": grant.refresh_token})
        if response.status_code != 200:
            raise refusal_from_response(response, refused=RefreshRejected, subject="refresh the token")
        return self._grant_from(response, read_json(response))

    def device_status(self, grant: TokenGrant) -> dict[str, Any]:
        """GET /device: the gateway's view of this device (status, effective policy, spend)."""
        response = self._send("GET", f"{grant.proxy_base_url}/device", headers=bearer(grant))
        if response.status_code != 200:
            raise refusal_from_response(response, refused=TokenRejected, subject="report this device's status")
        return read_json(response)

    def model_ids(self, grant: TokenGrant) -> list[str]:
        """The model ids GET /v1/models lists through the gateway, newest first."""
        response = self._send("GET", f"{grant.proxy_base_url}/v1/models", params={"limit": 1000}, headers=bearer(grant))
        if response.status_code != 200:
            raise refusal_from_response(response, refused=TokenRejected, subject="list the models")
        data = read_json(response).get("data")
        entries = data if isinstance(data, list) else []
        return [entry["id"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]

    def check_health(self) -> None:
        url = self._config.health_url
        response = self._send("GET", url)
        try:
            healthy = response.status_code == 200 and read_json(response).get("status") == "ok"
        except UnexpectedResponse:
            healthy = False
        if not healthy:
            raise GatewayUnreachable(
                f"The gateway at {url} is not healthy (HTTP {response.status_code}: {response.text[:200]!r})."
            )
        check_server_date(response, now=self._clock(), tolerance=self._config.max_clock_skew)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        origin = origin_of(url)
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise GatewayUnreachable(
                f"The gateway at {origin} did not answer within {self._config.request_timeout:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(f"Cannot reach the gateway at {origin} ({exc or type(exc).__name__}).") from exc
        if response.status_code >= 500:
            raise GatewayUnreachable(
                f"The gateway at {origin} failed with HTTP {response.status_code} ({envelope_message(response) or 'no details'})."
            )
        return response

    def _grant_from(self, response: httpx.Response, body: Any) -> TokenGrant:
        """Never refuses a 200: the gateway has already spent the old refresh token, so dropping
        the new pair over a clock problem would cost the device its token family."""
        received_at = self._clock()
        return grant_from_response(body, received_at=received_at, clock_offset=clock_offset(response, now=received_at))


def bearer(grant: TokenGrant) -> dict[str, str]:
    return {"authorization": f"Bearer {grant.wrapper_token}", "anthropic-version": "2023-06-01"}


def device_description(config: ProxyConfig) -> dict[str, str]:
    """The bootstrap fields that describe this device; empty ones are left out (the gateway keeps
    what it had)."""
    fields = {"device_name": config.device_name or "", "app_name": config.app_name, "os": operating_system()}
    return {name: value for name, value in fields.items() if value}


def clock_offset(response: httpx.Response, *, now: float) -> float | None:
    """The gateway's clock minus ours, by the Date header (None without one); 0 within the
    header's one-second resolution. The header drops the fraction, hence the half second."""
    server_time = response_date(response)
    if server_time is None:
        return None
    offset = server_time + DATE_HEADER_RESOLUTION / 2 - now
    return offset if abs(offset) > DATE_HEADER_RESOLUTION else 0.0


def check_server_date(response: httpx.Response, *, now: float, tolerance: float) -> None:
    """Refuse to go on when this computer's clock disagrees with the gateway's Date header by more
    than `tolerance`: the refresh times are corrected, but the clock is still wrong for everything
    else on this computer (certificates, logs, Claude Code), and the user should fix it."""
    offset = clock_offset(response, now=now)
    if offset is not None and abs(offset) > tolerance:
        direction = "behind" if offset > 0 else "ahead of"
        raise ClockSkewError(
            f"This computer's clock is {describe_duration(abs(offset))} {direction} the gateway's "
            f"(local {format_timestamp(now)}, gateway {format_timestamp(now + offset)}).",
            skew_seconds=-offset,
        )


def check_grant_fresh(grant: TokenGrant, *, now: float) -> None:
    """A token the gateway just issued cannot look expired unless the local clock is ahead and no
    Date header told us by how much (a proxy dropped it)."""
    if grant.is_expired(now):
        raise ClockSkewError(
            f"The gateway's new token expires at {format_timestamp(grant.expires_at)}, which this computer's "
            f"clock ({format_timestamp(now)}) already considers past: the clock is ahead.",
            skew_seconds=now - grant.expires_at,
        )


def response_date(response: httpx.Response) -> float | None:
    raw = response.headers.get("date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return None


def refusal_from_response(response: httpx.Response, *, refused: type[GatewayRefused], subject: str) -> ProxyClientError:
    """The typed error for a 4xx: the class named by `details.error_code`, else `refused`."""
    try:
        error = read_json(response).get("error")
    except UnexpectedResponse:
        error = None
    if not isinstance(error, dict):
        return UnexpectedResponse(f"The gateway answered HTTP {response.status_code} without its error envelope.")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    code = str(details.get("error_code") or error.get("type") or "unknown")
    message = str(error.get("message") or "no message")
    error_class = REFUSALS_BY_CODE.get(code, refused)
    return error_class(
        f"The gateway refused to {subject}: {message} ({code}, HTTP {response.status_code}).",
        status=response.status_code,
        error_code=code,
        retry_after=retry_after_seconds(response),
    )


def read_json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise UnexpectedResponse(f"The gateway answered HTTP {response.status_code} with a body that is not JSON.") from exc
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"The gateway answered HTTP {response.status_code} with JSON that is not an object.")
    return body


def envelope_message(response: httpx.Response) -> str:
    try:
        error = read_json(response).get("error")
    except UnexpectedResponse:
        return ""
    return str(error.get("message", "")) if isinstance(error, dict) else ""


def retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def gateway_root(bootstrap_url: str) -> str:
    """The gateway's root, where its /auth routes are: the bootstrap URL without /bootstrap."""
    return bootstrap_url[: -len("/bootstrap")] if bootstrap_url.endswith("/bootstrap") else origin_of(bootstrap_url)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def describe_duration(seconds: float) -> str:
    minutes = round(seconds / 60)  # an HTTP date drops the fraction: 599.2 s is "10 min"
    if minutes < 1:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
