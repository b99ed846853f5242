"""A stolen operator password: with a TOTP device it is not enough to log in, and with
ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS a superuser cannot log in on a password alone at all."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "operator-password-123"


def log_in(username: str, otp_token: str = "") -> tuple[Client, int]:
    """The admin login form, then the admin index: (the browser, the index's status)."""
    client = Client()
    client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": PASSWORD, "otp_token": otp_token, "next": "/admin/"}
    )
    return client, client.get("/admin/").status_code


def current_code(user) -> str:
    device = TOTPDevice.objects.get(user=user)
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)


def test_a_stolen_password_of_a_user_with_totp_does_not_log_in(staff):
    call_command("enroll_totp", "ops", stdout=io.StringIO())
    assert log_in("ops")[1] == 302
    code = current_code(staff)
    assert log_in("ops", code)[1] == 200
    # A wrong code, and the right one replayed, are both refused (each failure also throttles the device).
    assert log_in("ops", f"{(int(code) + 1) % 10**6:06d}")[1] == 302
    assert log_in("ops", code)[1] == 302


def test_a_user_without_totp_logs_in_with_the_password_when_it_is_optional(staff, superuser, settings):
    settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = False
    assert (log_in("ops")[1], log_in("root")[1]) == (200, 200)


def test_a_superuser_without_totp_cannot_log_in_when_it_is_required(superuser, staff, settings):
    settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = True
    response = Client().post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 200
    assert "has no TOTP device yet" in response.content.decode()
    assert log_in("ops")[1] == 200, "staff who are not superusers keep the second factor optional"


def test_an_old_password_only_session_loses_the_admin_once_totp_is_required(superuser, settings):
    settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = False
    browser, status = log_in("root")
    assert status == 200
    settings.ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = True
    assert browser.get("/admin/").status_code == 302


def test_enroll_totp_prints_the_authenticator_url_once_and_refuses_to_replace_silently(superuser, capsys):
    call_command("enroll_totp", "root")
    url = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(
        r"otpauth://totp/LLM%20gateway%3Aroot\?secret=[A-Z2-7]+&algorithm=SHA1&digits=6&period=30"
        r"&issuer=LLM%20gateway",
        url,
    )
    with pytest.raises(CommandError, match="already has a TOTP device"):
        call_command("enroll_totp", "root")
    assert TOTPDevice.objects.filter(user=superuser).count() == 1
