"""What can go wrong on the desktop side, as types a user can act on.

    ProxyClientError                    (base: `hint` says what to do, `exit_code` for the CLI)
    ├── ConfigurationError              exit 2: ENABLE_PROXY off, a malformed URL
    ├── StateUnavailable                exit 2: the encryption key cannot be read (locked keyring)
    ├── GatewayUnreachable              exit 3: connection refused, DNS, timeout, gateway 5xx, unhealthy
    ├── ClockSkewError                  exit 5: this computer's clock disagrees with the gateway's
    ├── UnexpectedResponse              exit 1: the gateway answered something this client cannot read
    └── GatewayRefused                  (the gateway said no; `error_code` from the envelope)
        ├── TokenRejected               exit 4: a wrapper token was refused (GET /device, /v1/models)
        ├── RefreshRejected             exit 4: a refresh token is expired, reused or revoked
        ├── EnrollmentRefused           exit 4: bootstrap was refused
        │   ├── BootstrapSecretInvalid      bootstrap_secret_invalid
        │   ├── DeviceSecretRejected        device_secret_invalid
        │   ├── DevicePendingApproval       device_pending_approval
        │   ├── DeviceBlocked               device_blocked
        │   ├── EnrollmentRateLimited       enrollment_rate_limited (carries retry_after)
        │   └── SignInRequired              sign_in_required: this device enrolls by signing its person in
        └── SignInFailed                exit 4: a sign-in did not finish
            ├── SignInDenied                sign_in_denied
            ├── SignInExpired               sign_in_expired
            ├── PersonBlocked               person_blocked
            └── SignInNotEnabled            sign_in_not_enabled

The refresh service retries `GatewayUnreachable` with backoff; a refusal during refresh makes it
fall back to bootstrap, and a refusal of bootstrap reaches the application (and the CLI's stderr).
"""

from __future__ import annotations

# A 401 with one of these codes means "this token is stale": renewing can help. Others (forged,
# blocked) cannot.
RENEWABLE_ERROR_CODES = frozenset({"token_expired", "token_revoked"})


class ProxyClientError(Exception):
    exit_code: int = 1
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigurationError(ProxyClientError):
    exit_code = 2


class StateUnavailable(ProxyClientError):
    exit_code = 2


class GatewayUnreachable(ProxyClientError):
    exit_code = 3
    hint = (
        "Check that the gateway is running (curl its /healthz), that PROXY_BOOTSTRAP_URL and "
        "PROXY_HEALTH_URL point at it, and that no firewall or proxy blocks the connection."
    )


class ClockSkewError(ProxyClientError):
    exit_code = 5
    hint = "Turn on automatic date and time (network time) in your system settings, then try again."

    def __init__(self, message: str, *, skew_seconds: float) -> None:
        super().__init__(message)
        self.skew_seconds = skew_seconds


class UnexpectedResponse(ProxyClientError):
    exit_code = 1
    hint = "Check that PROXY_BOOTSTRAP_URL points at the gateway and not at another web server."


class GatewayRefused(ProxyClientError):
    """The gateway answered with its error envelope; `error_code` names the exact rule."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint, retry_after=retry_after)
        self.status = status
        self.error_code = error_code


class TokenRejected(GatewayRefused):
    hint = "The client renews a stale token by itself; if this persists, ask the gateway's operator about this device."


class RefreshRejected(GatewayRefused):
    hint = "The client bootstraps again with its device secret; no action is needed unless that fails too."


class EnrollmentRefused(GatewayRefused):
    hint = "Ask the gateway's operator why this device may not enroll."


class BootstrapSecretInvalid(EnrollmentRefused):
    hint = "Set PROXY_BOOTSTRAP_SECRET to the enrollment secret your operator gave you (it is missing or wrong)."


class DeviceSecretRejected(EnrollmentRefused):
    hint = (
        "The gateway knows this device id with another device secret (the local state was lost or copied). "
        "Ask the operator to reset this device's secret in the gateway admin, or delete the state directory "
        "to enroll as a new device."
    )


class DevicePendingApproval(EnrollmentRefused):
    hint = "Ask the gateway's operator to approve this device in the admin; the client keeps trying meanwhile."


class DeviceBlocked(EnrollmentRefused):
    hint = "An operator blocked this device; only they can unblock it."


class EnrollmentRateLimited(EnrollmentRefused):
    hint = "Too many enrollments from this network; the client retries after the gateway's retry-after."


class SignInRequired(EnrollmentRefused):
    hint = "Run `proxyclient login` to sign in with your company account (the browser opens, or enter the code shown)."


class SignInFailed(GatewayRefused):
    hint = "Run `proxyclient login` again."


class SignInDenied(SignInFailed):
    hint = "The sign-in was declined at your company's sign-in page; run `proxyclient login` again to retry."


class SignInExpired(SignInFailed):
    hint = "The sign-in took too long or was already used; run `proxyclient login` again."


class PersonBlocked(SignInFailed):
    hint = "An operator blocked your account on the gateway; only they can unblock it."


class SignInNotEnabled(SignInFailed):
    hint = "This gateway does not sign people in; ask its operator for PROXY_BOOTSTRAP_SECRET instead."
