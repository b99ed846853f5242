"""Cross-site request forgery against the session-authenticated operator endpoint that changes
state (POST /admin/circuit-breaker/reset): whatever other headers a forged request carries, a
staff session alone never resets the breaker without the CSRF token; only a credential that
authenticates by itself (an operator API key) goes without it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import AsyncClient

from tests.gateway.conftest import call_gateway
from tests.support import enroll_device
from tokens.operators import create_operator_api_key

RESET = "/admin/circuit-breaker/reset"
CSRF_TOKEN = secrets.token_hex(16)  # 32 characters: the shape of Django's CSRF secret


@pytest.fixture
async def staff_session(transactional_db) -> str:
    """The session cookie of a logged-in staff operator, as their browser holds it."""
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.create_user)(username="ops", password="correct-horse-9", is_staff=True)
    browser = AsyncClient()
    assert await browser.alogin(username="ops", password="correct-horse-9")
    return browser.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def reset_actors(caplog) -> Callable[[], list[str]]:
    """The actors of the breaker resets done so far in the test, from the breaker's log line."""
    caplog.set_level(logging.INFO, logger="gateway.breaker")
    return lambda: [r.event_fields["actor"] for r in caplog.records if r.getMessage() == "Circuit breaker reset"]


async def post_reset(session: str, **headers: str):
    answer = await call_gateway("POST", RESET, headers={"cookie": f"{settings.SESSION_COOKIE_NAME}={session}", **headers})
    return answer.status, orjson.loads(answer.body)


def error_code(body: dict) -> str:
    return body["error"]["details"]["error_code"]


async def test_session_reset_without_the_csrf_token_is_refused(staff_session, reset_actors):
    status, body = await post_reset(staff_session)
    assert (status, error_code(body), body["error"]["message"]) == (403, "csrf_failed", "CSRF verification failed.")
    assert reset_actors() == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic b3BzOmNvcnJlY3QtaG9yc2UtOQ==",
        "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYB",
        "Bearer",
        "Bearer   ",
    ],
    ids=["basic", "negotiate", "bare-bearer", "bearer-with-blanks"],
)
async def test_session_reset_with_a_non_bearer_authorization_header_still_needs_the_csrf_token(
    staff_session, reset_actors, authorization
):
    status, body = await post_reset(staff_session, authorization=authorization)
    assert (status, error_code(body)) == (403, "csrf_failed")
    assert reset_actors() == []


async def test_session_reset_with_a_bogus_x_api_key_still_needs_the_csrf_token(staff_session, reset_actors):
    status, body = await post_reset(staff_session, **{"x-api-key": "gwop_" + secrets.token_urlsafe(32)})
    assert (status, error_code(body)) == (403, "csrf_failed")
    assert reset_actors() == []


async def test_session_reset_with_a_bogus_bearer_token_is_refused(staff_session, reset_actors):
    status, body = await post_reset(staff_session, authorization="Bearer gwop_" + secrets.token_urlsafe(32))
    assert (status, error_code(body)) == (401, "invalid_token")
    assert reset_actors() == []


async def test_session_reset_with_a_device_token_is_refused(staff_session, reset_actors):
    wrapper_token = await enroll_device()
    status, body = await post_reset(staff_session, authorization=f"Bearer {wrapper_token}")
    assert (status, error_code(body), body["error"]["message"]) == (401, "invalid_token", "Not an operator API key.")
    assert reset_actors() == []


async def test_session_reset_from_a_foreign_origin_is_refused_even_with_the_token(staff_session, reset_actors):
    status, body = await post_reset(
        staff_session,
        cookie=f"{settings.SESSION_COOKIE_NAME}={staff_session}; {settings.CSRF_COOKIE_NAME}={CSRF_TOKEN}",
        **{"x-csrftoken": CSRF_TOKEN, "origin": "https://evil.example"},
    )
    assert (status, error_code(body)) == (403, "csrf_failed")
    assert reset_actors() == []


async def test_session_reset_with_the_csrf_token_resets(staff_session, reset_actors):
    status, body = await post_reset(
        staff_session,
        cookie=f"{settings.SESSION_COOKIE_NAME}={staff_session}; {settings.CSRF_COOKIE_NAME}={CSRF_TOKEN}",
        **{"x-csrftoken": CSRF_TOKEN},
    )
    assert (status, body["state"]) == (200, "closed")
    assert reset_actors() == ["user:ops"]


async def test_operator_api_key_resets_without_the_csrf_token_even_beside_a_session(staff_session, reset_actors):
    _, secret = await sync_to_async(create_operator_api_key)(name="oncall", created_by=None)
    status, body = await post_reset(staff_session, authorization=f"Bearer {secret}")
    assert (status, body["state"]) == (200, "closed")
    assert reset_actors() == ["operator-key:oncall"]


async def test_session_reprice_without_the_csrf_token_is_refused(staff_session):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = await sync_to_async(get_user_model().objects.get)(username="ops")
    await sync_to_async(user.user_permissions.add)(await sync_to_async(Permission.objects.get)(codename="change_modelprice"))
    answer = await call_gateway(
        "POST",
        "/admin/usage/reprice",
        headers={
            "cookie": f"{settings.SESSION_COOKIE_NAME}={staff_session}",
            "content-type": "application/json",
        },
        body=b'{"since": "2026-01-01T00:00:00Z", "dry_run": false}',
    )
    assert (answer.status, error_code(orjson.loads(answer.body))) == (403, "csrf_failed")
