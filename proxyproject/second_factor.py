"""Optional TOTP second factor for console logins (django-otp's TOTP devices).

An operator who has a confirmed TOTP device must give its current code with the password; with
ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS on, a superuser without one cannot log in until an operator
enrolls it (`manage.py enroll_totp <username>`). The admin site also refuses a session that
should have passed the second factor and did not (a session from before the device or setting).
A session the identity provider signed in (proxyproject/operator_sign_in.py) passed the provider's
own second factor instead.

Wrong codes are throttled by django-otp (each failure doubles the wait on that device); the
password in front of them is throttled by the login lockout.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from proxyproject.operator_sign_in import signed_in_by_provider


def totp_device_of(user: AbstractBaseUser) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def second_factor_required(user: AbstractBaseUser) -> bool:
    """A user with a TOTP device always gives its code; a superuser must have one when the setting says so."""
    return (user.is_superuser and settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS) or totp_device_of(user) is not None


class ConsoleLoginForm(AdminAuthenticationForm):
    """The admin's login form with a one-time code field, checked only for users who need one."""

    otp_token = forms.CharField(
        required=False,
        label="One-time code",
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "totp_not_enrolled": "This account must use a one-time code, and has no TOTP device yet: ask an operator "
        "to run manage.py enroll_totp.",
        "totp_invalid": "Enter the current one-time code of your authenticator app.",
        "totp_throttled": "Too many wrong one-time codes: wait a little and try again.",
    }

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        user = self.get_user()
        if user is not None and second_factor_required(user):
            user.otp_device = self._verified_device(user, cleaned.get("otp_token") or "")
        return cleaned

    def _verified_device(self, user: AbstractBaseUser, token: str) -> TOTPDevice:
        device = totp_device_of(user)
        if device is None:
            raise forms.ValidationError(self.error_messages["totp_not_enrolled"], code="totp_not_enrolled")
        allowed, _ = device.verify_is_allowed()
        if not allowed:
            raise forms.ValidationError(self.error_messages["totp_throttled"], code="totp_throttled")
        if not (token and device.verify_token(token.strip())):
            raise forms.ValidationError(self.error_messages["totp_invalid"], code="totp_invalid")
        # django-otp stores the verified device in the session when Django logs the user in.
        return device


class ConsoleAdminSite(AdminSite):
    """The default admin site, with the second factor at the door."""

    login_form = ConsoleLoginForm
    login_template = "admin/console_login.html"

    def login(self, request: HttpRequest, extra_context: dict | None = None):
        """The login page also offers the identity provider's sign-in when one is configured."""
        context = {
            "operator_sign_in_oidc": settings.OPERATOR_SIGN_IN_OIDC,
            "sign_in_failed": request.GET.get("sign_in") == "failed",
            **(extra_context or {}),
        }
        return super().login(request, context)

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        if not super().has_permission(request):
            return False
        return not second_factor_required(user) or user.is_verified() or signed_in_by_provider(request)
