"""Password guessing against the admin login, on a live gateway: each client is a real TCP peer
with its own loopback address (127.0.0.x), so the per-address limit sees distinct addresses."""

from __future__ import annotations

import datetime as dt
import logging
import re

import httpx
import pytest
from axes.models import AccessAttempt, AccessAttemptExpiration, AccessFailureLog
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from proxyproject.login_lockout import audit_lockout, cool_off_for_failures
from tests.servers import gateway_process

LIMIT = 3
COOL_OFF = 60
PASSWORD = "operator-password-123"


@pytest.fixture
def gateway(transactional_db):
    get_user_model().objects.create_superuser("operator", password=PASSWORD)
    server = gateway_process(
        ADMIN_LOGIN_FAILURE_LIMIT=str(LIMIT), ADMIN_LOGIN_COOLOFF_SECONDS=str(COOL_OFF), ADMIN_LOGIN_COOLOFF_MAX_SECONDS="3600"
    ).start()
    yield server
    server.stop()


def log_in(server, username: str, password: str, address: str = "127.0.0.1") -> httpx.Response:
    """The admin's login form as a browser submits it, from `address`."""
    with httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=10) as browser:
        form = browser.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        return browser.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token,
                "username": username,
                "password": password,
                "next": "/admin/",
            },
        )


def logged_in(response: httpx.Response) -> bool:
    return response.status_code == 302 and response.headers["location"] == "/admin/" and "sessionid" in response.cookies


def age_attempts(seconds: int) -> None:
    """Move every stored failure `seconds` into the past: the clock of the cool-off, moved without sleeping."""
    for attempt in AccessAttempt.objects.all():
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=attempt.attempt_time - dt.timedelta(seconds=seconds))
    for expiration in AccessAttemptExpiration.objects.all():
        AccessAttemptExpiration.objects.filter(pk=expiration.pk).update(
            expires_at=expiration.expires_at - dt.timedelta(seconds=seconds)
        )


def test_password_guessing_locks_the_username_even_with_the_right_password(gateway):
    answers = [log_in(gateway, "operator", f"guess-{n}").status_code for n in range(LIMIT)]
    assert answers == [200] * (LIMIT - 1) + [429]
    locked = log_in(gateway, "operator", PASSWORD)
    assert (locked.status_code, "sessionid" in locked.cookies) == (429, False)


def test_guessing_one_username_from_many_addresses_locks_that_username_everywhere(gateway):
    for n in range(LIMIT):
        log_in(gateway, "operator", f"guess-{n}", address=f"127.0.0.{10 + n}")
    assert log_in(gateway, "operator", PASSWORD, address="127.0.0.50").status_code == 429


def test_guessing_many_usernames_from_one_address_locks_that_address_only(gateway):
    for n in range(LIMIT):
        log_in(gateway, f"someone-{n}", "guess", address="127.0.0.20")
    assert log_in(gateway, "operator", PASSWORD, address="127.0.0.20").status_code == 429
    assert logged_in(log_in(gateway, "operator", PASSWORD, address="127.0.0.21"))


def test_guessing_on_through_a_lockout_doubles_the_cool_off(gateway):
    for n in range(LIMIT):
        log_in(gateway, "operator", f"guess-{n}")
    age_attempts(COOL_OFF + 1)
    assert logged_in(log_in(gateway, "operator", PASSWORD)), "the first cool-off has ended"

    for n in range(2 * LIMIT):
        assert log_in(gateway, "operator", f"guess-{n}").status_code in (200, 429)
    age_attempts(COOL_OFF + 1)
    assert log_in(gateway, "operator", PASSWORD).status_code == 429, "still locked: the cool-off is now twice as long"
    # That refused try counted too and restarted the (doubled) cool-off.
    age_attempts(2 * COOL_OFF - 1)
    assert log_in(gateway, "operator", PASSWORD).status_code == 429
    age_attempts(2 * COOL_OFF + 1)
    assert logged_in(log_in(gateway, "operator", PASSWORD))


def test_the_cool_off_rule_doubles_per_limit_and_stops_at_the_ceiling(settings):
    settings.ADMIN_LOGIN_FAILURE_LIMIT, settings.ADMIN_LOGIN_COOLOFF_SECONDS = 5, 900
    settings.ADMIN_LOGIN_COOLOFF_MAX_SECONDS = 86400
    assert [cool_off_for_failures(n).total_seconds() for n in (0, 4, 5, 9, 10, 15, 20, 10**9)] == [
        900,
        900,
        900,
        900,
        1800,
        3600,
        7200,
        86400,
    ]


def test_every_guess_is_audited_and_the_lockout_is_logged(gateway):
    for n in range(LIMIT + 1):
        log_in(gateway, "operator", f"guess-{n}", address="127.0.0.30")
    failures = list(AccessFailureLog.objects.order_by("attempt_time").values_list("username", "ip_address", "locked_out"))
    assert failures == [("operator", "127.0.0.30", False)] * (LIMIT - 1) + [("operator", "127.0.0.30", True)] * 2
    assert "Admin login locked out" in gateway.log()


def test_the_lockout_audit_line_names_user_address_and_cool_off(db, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="proxyproject.login_lockout"),
        override_settings(ADMIN_LOGIN_COOLOFF_SECONDS=900),
    ):
        audit_lockout("axes", request=None, username="operator", ip_address="203.0.113.9")
    (record,) = [r for r in caplog.records if r.name == "proxyproject.login_lockout"]
    assert record.getMessage() == "Admin login locked out"
    assert record.event_fields == {"username": "operator", "client_ip": "203.0.113.9", "cool_off_seconds": 900}


def test_an_operator_unlocks_a_locked_username_with_the_command(gateway, capsys):
    for n in range(LIMIT):
        log_in(gateway, "operator", f"guess-{n}")
    assert log_in(gateway, "operator", PASSWORD).status_code == 429
    call_command("unlock_login", username="operator")
    assert "Unlocked username 'operator': 1 failure counter(s) cleared." in capsys.readouterr().out
    assert logged_in(log_in(gateway, "operator", PASSWORD))
