"""Every error the platform itself returns, as types, and the one mapping to Anthropic's envelope.

    GatewayError                      (base: status, Anthropic error type, error code, headers)
    ├── InvalidRequest                400 invalid_request_error
    │   ├── SignInExpired             400 sign_in_expired        (unknown, finished or timed-out sign-in)
    │   ├── NonCanonicalPath          400 non_canonical_path     (dot segments, %2e, //, ...: refused before auth)
    │   └── HostNotAllowed            400 host_not_allowed       (Host not in ALLOWED_HOSTS)
    ├── RequestTooLarge               413 request_too_large
    ├── RequestLineTooLong            414 invalid_request_error  (refused by the server, proxyproject/http_limits.py)
    ├── RequestHeadersTooLarge        431 invalid_request_error  (refused by the server, proxyproject/http_limits.py)
    ├── AuthenticationFailed          401 authentication_error   (x-should-retry: false)
    │   ├── TokenExpired              401 token_expired          (retryable: clients refresh first)
    │   ├── TokenRevoked              401 token_revoked
    │   ├── RefreshTokenReused        401 refresh_token_reused   (the token's whole family is revoked)
    │   ├── BootstrapSecretInvalid    401 bootstrap_secret_invalid
    │   ├── DeviceSecretInvalid       401 device_secret_invalid
    │   └── IdTokenRejected           401 id_token_rejected      (the provider's ID token failed a check)
    ├── PermissionDenied              403 permission_error
    │   ├── DevicePendingApproval     403 device_pending_approval
    │   ├── DeviceBlocked             403 device_blocked
    │   ├── ModelNotAllowed           403 model_not_allowed
    │   ├── CsrfFailed                403 csrf_failed            (a session without the CSRF token)
    │   ├── SignInRequired            403 sign_in_required       (only a person's sign-in enrolls this device)
    │   ├── SignInNotEnabled          403 sign_in_not_enabled    (ENROLLMENT_MODE does not include oidc)
    │   ├── SignInDenied              403 sign_in_denied         (the person declined at the provider)
    │   ├── PersonBlocked             403 person_blocked
    │   └── PersonDisabled            403 person_disabled        (the provider says the account is disabled)
    ├── NotFound                      404 not_found_error
    │   └── RouteNotOffered           404 route_not_offered
    ├── RateLimited                   429 rate_limit_error       (retry-after)
    │   └── EnrollmentRateLimited     429 enrollment_rate_limited
    ├── SpendCapReached               429 rate_limit_error       (x-should-retry: false)
    ├── UpstreamUnreachable           502 api_error
    ├── IdentityProviderUnavailable   502 api_error              (the identity provider did not answer as expected)
    ├── CircuitOpen                   503 api_error              (retry-after)
    ├── SharedStateUnavailable        503 api_error              (retry-after: Redis unreachable, fail closed)
    ├── DatabaseUnavailable           503 api_error              (retry-after: the database did not answer)
    ├── GatewayShuttingDown           503 overloaded_error       (retry-after: the server's grace period ended)
    ├── NoUpstreamKey                 503 api_error              (no master key configured)
    ├── UpstreamAuthFailed            503 api_error              (the upstream refused the gateway's keys, not the client's token)
    └── UpstreamTimeout               504 timeout_error

SDKs retry 408/409/429/5xx unless `x-should-retry: false`; the headers here decide which refusals a
client may retry, so a revoked or capped device does not hammer the gateway.

Redis failures on the way to the upstream become SharedStateUnavailable here too
(`refuse_when_shared_state_fails`), so every caller maps them the same way.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from django.http import HttpResponse

from proxyproject.lib.logging import log_event
from proxyproject.lib.redis import REDIS_ERRORS

logger = logging.getLogger("gateway.errors")


class GatewayError(Exception):
    status: int = 500
    error_type: str = "api_error"
    error_code: str = "internal_error"
    default_message: str = "Internal error"
    default_retry_after: float | None = None
    should_retry: bool | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.retry_after = self.default_retry_after if retry_after is None else retry_after
        self.extra_headers = headers or {}
        self.details = details or {}
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


class InvalidRequest(GatewayError):
    status, error_type, error_code = 400, "invalid_request_error", "invalid_request"
    default_message = "Invalid request"


class NonCanonicalPath(InvalidRequest):
    error_code = "non_canonical_path"
    default_message = (
        "The request path is not in canonical form: dot segments, empty segments, percent-encoding and "
        "backslashes are not accepted."
    )
    should_retry = False


class HostNotAllowed(InvalidRequest):
    error_code = "host_not_allowed"
    default_message = "The Host header names a host this gateway does not serve."
    should_retry = False


class SignInExpired(InvalidRequest):
    error_code = "sign_in_expired"
    default_message = "This sign-in is unknown, already finished or timed out. Start a new one."


class RequestTooLarge(GatewayError):
    status, error_type, error_code = 413, "request_too_large", "request_too_large"
    default_message = "Request exceeds the maximum allowed size"


class RequestLineTooLong(GatewayError):
    status, error_type, error_code = 414, "invalid_request_error", "request_line_too_long"
    default_message = "The request line is longer than the server accepts."
    should_retry = False


class RequestHeadersTooLarge(GatewayError):
    status, error_type, error_code = 431, "invalid_request_error", "request_headers_too_large"
    default_message = "The request headers are larger, or more numerous, than the server accepts."
    should_retry = False


class AuthenticationFailed(GatewayError):
    status, error_type, error_code = 401, "authentication_error", "invalid_token"
    default_message = "Invalid authentication credentials"
    should_retry: bool | None = False


class TokenExpired(AuthenticationFailed):
    error_code = "token_expired"
    default_message = "Token expired. Please refresh your token."
    should_retry = None


class TokenRevoked(AuthenticationFailed):
    error_code = "token_revoked"
    default_message = "Token has been revoked. Bootstrap again to get a new token."


class RefreshTokenReused(AuthenticationFailed):
    error_code = "refresh_token_reused"
    default_message = "This refresh token was already used; every token descended from it is now revoked. Bootstrap again."


class BootstrapSecretInvalid(AuthenticationFailed):
    error_code = "bootstrap_secret_invalid"
    default_message = "Missing or wrong X-Bootstrap-Secret header."


class DeviceSecretInvalid(AuthenticationFailed):
    error_code = "device_secret_invalid"
    default_message = "device_secret is missing or does not match this device."


class IdTokenRejected(AuthenticationFailed):
    error_code = "id_token_rejected"
    default_message = "The identity provider's ID token failed verification."


class PermissionDenied(GatewayError):
    status, error_type, error_code = 403, "permission_error", "permission_denied"
    default_message = "Permission denied"


class DevicePendingApproval(PermissionDenied):
    error_code = "device_pending_approval"
    default_message = "This device is waiting for an operator's approval."


class DeviceBlocked(PermissionDenied):
    error_code = "device_blocked"
    default_message = "This device has been blocked by an operator."
    should_retry = False


class ModelNotAllowed(PermissionDenied):
    error_code = "model_not_allowed"
    default_message = "This device is not allowed to use this model."


class CsrfFailed(PermissionDenied):
    error_code = "csrf_failed"
    default_message = "CSRF verification failed."


class SignInRequired(PermissionDenied):
    error_code = "sign_in_required"
    default_message = "This device enrolls by signing its person in: POST /auth/oidc/start."
    should_retry = False


class SignInNotEnabled(PermissionDenied):
    error_code = "sign_in_not_enabled"
    default_message = "Signing in with the identity provider is not enabled on this gateway."
    should_retry = False


class SignInDenied(PermissionDenied):
    error_code = "sign_in_denied"
    default_message = "The sign-in was declined at the identity provider."
    should_retry = False


class PersonBlocked(PermissionDenied):
    error_code = "person_blocked"
    default_message = "This person has been blocked by an operator."
    should_retry = False


class PersonDisabled(PermissionDenied):
    error_code = "person_disabled"
    default_message = "The identity provider reports this person's account as disabled: ask your administrator."
    should_retry = False


class NotFound(GatewayError):
    status, error_type, error_code = 404, "not_found_error", "not_found"
    default_message = "Not found"


class RouteNotOffered(NotFound):
    error_code = "route_not_offered"
    default_message = "This gateway does not offer that route."


class RateLimited(GatewayError):
    status, error_type, error_code = 429, "rate_limit_error", "device_rate_limited"
    default_message = "Rate limit exceeded for this device."


class EnrollmentRateLimited(RateLimited):
    error_code = "enrollment_rate_limited"
    default_message = "Too many enrollment requests from this address."


class SpendCapReached(GatewayError):
    status, error_type, error_code = 429, "rate_limit_error", "spend_cap_reached"
    default_message = "Spend cap reached for this device."
    should_retry = False


class UpstreamUnreachable(GatewayError):
    status, error_type, error_code = 502, "api_error", "upstream_unreachable"
    default_message = "The upstream API could not be reached."


class IdentityProviderUnavailable(GatewayError):
    status, error_type, error_code = 502, "api_error", "identity_provider_unavailable"
    default_message = "The identity provider could not be reached or answered unexpectedly."


class CircuitOpen(GatewayError):
    status, error_type, error_code = 503, "api_error", "circuit_open"
    default_message = "Circuit breaker is open"


class SharedStateUnavailable(GatewayError):
    """Fail closed: without Redis the shared limits and spend caps cannot be checked, and letting the
    request through unchecked could overspend; Redis outages are usually short, hence retry-after."""

    status, error_type, error_code = 503, "api_error", "shared_state_unavailable"
    default_message = (
        "The gateway's shared state (Redis) is unreachable, so limits and spend caps cannot be checked. Retry shortly."
    )
    default_retry_after = 5.0


class DatabaseUnavailable(GatewayError):
    status, error_type, error_code = 503, "api_error", "database_unavailable"
    default_message = "The gateway's database is unreachable. Retry shortly."
    default_retry_after = 5.0


class GatewayShuttingDown(GatewayError):
    """What a request still open when the server's shutdown grace period ends gets: on a stream, as
    the `event: error` the API itself sends; retryable, since another instance can serve it."""

    status, error_type, error_code = 503, "overloaded_error", "gateway_shutting_down"
    default_message = "The gateway is shutting down; retry the request."
    default_retry_after = 1.0


class NoUpstreamKey(GatewayError):
    status, error_type, error_code = 503, "api_error", "no_upstream_key"
    default_message = "The gateway has no upstream API key configured."


class UpstreamAuthFailed(GatewayError):
    """The upstream refused the gateway's own credential. Never relayed as the upstream's 401
    `authentication_error`: SDKs and Claude Code take that for their own token being bad."""

    status, error_type, error_code = 503, "api_error", "upstream_auth_failed"
    default_message = "The upstream API refused the gateway's API keys; the operator has been told."
    default_retry_after = 10.0


class UpstreamTimeout(GatewayError):
    status, error_type, error_code = 504, "timeout_error", "upstream_timeout"
    default_message = "The upstream API did not answer in time."


@contextmanager
def refuse_when_shared_state_fails(stage: str, request_id: str | None = None) -> Iterator[None]:
    """Around a Redis step that must succeed before a request may go upstream: a Redis error
    (refused, timed out, pool exhausted) becomes SharedStateUnavailable instead of a generic 500."""
    try:
        yield
    except REDIS_ERRORS as exc:
        log_event(
            logger,
            "Shared state unavailable; request refused",
            logging.WARNING,
            stage=stage,
            requestId=request_id,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise SharedStateUnavailable() from exc


def new_request_id() -> str:
    return "req_gw_" + secrets.token_hex(12)


def error_body(error: GatewayError, request_id: str | None) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {
                "type": error.error_type,
                "message": error.message,
                "details": {**error.details, "error_code": error.error_code},
            },
            "request_id": request_id,
        }
    )


def error_response(error: GatewayError, request_id: str | None = None) -> HttpResponse:
    request_id = request_id or new_request_id()
    response = HttpResponse(error_body(error, request_id), status=error.status, content_type="application/json")
    response["request-id"] = request_id
    for name, value in error.response_headers().items():
        response[name] = value
    return response
