"""Which ways in a deployment allows (ENROLLMENT_MODE, a comma-separated list): at most one of `open`,
`secret` and `approval` for /bootstrap, and `oidc` for people signing in with the company's identity
provider. `oidc,secret` is the common pair: people sign in, build machines hold the bootstrap secret.

Read from the setting at each call rather than once, so a test's override is seen."""

from __future__ import annotations

from django.conf import settings

BOOTSTRAP_MODES = ("open", "secret", "approval")
SIGN_IN_MODE = "oidc"


def enrollment_modes() -> tuple[str, ...]:
    return tuple(mode.strip() for mode in settings.ENROLLMENT_MODE.split(",") if mode.strip())


def bootstrap_mode() -> str | None:
    """How /bootstrap enrolls a device, or None when only people sign in."""
    return next((mode for mode in enrollment_modes() if mode in BOOTSTRAP_MODES), None)


def sign_in_enabled() -> bool:
    return SIGN_IN_MODE in enrollment_modes()
