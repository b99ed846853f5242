"""authenticate_operator: operator API keys or a logged-in staff session."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from proxyproject.lib.errors import AuthenticationFailed, PermissionDenied
from tokens.models import OperatorApiKey
from tokens.operators import authenticate_operator, create_operator_api_key, revoke_operator_api_key

pytestmark = pytest.mark.django_db

authenticate = async_to_sync(authenticate_operator)


def _request(rf, user=None, authorization: str | None = None):
    headers = {"authorization": authorization} if authorization else {}
    request = rf.get("/admin/usage", headers=headers)
    user = user or AnonymousUser()

    async def auser():
        return user

    request.auser = auser
    return request


def test_operator_key_authenticates_and_records_last_use(rf):
    key, secret = create_operator_api_key(name="grafana", created_by=None)
    assert secret.startswith("gwop_") and len(secret) > 40

    assert authenticate(_request(rf, authorization=f"Bearer {secret}")) == "operator-key:grafana"
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_last_use_is_written_at_most_once_a_minute(rf, django_assert_num_queries):
    key, secret = create_operator_api_key(name="scraper", created_by=None)
    OperatorApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - dt.timedelta(seconds=30))
    with django_assert_num_queries(1):
        authenticate(_request(rf, authorization=f"Bearer {secret}"))


@pytest.mark.parametrize("authorization", ["Bearer gwop_not-a-real-key", "Bearer eyJhbGciOi.device.token", "Basic b3BzOnB3"])
def test_bad_or_foreign_credentials_are_refused(rf, authorization):
    with pytest.raises(AuthenticationFailed):
        authenticate(_request(rf, authorization=authorization))


def test_revoked_key_is_refused(rf):
    key, secret = create_operator_api_key(name="old", created_by=None)
    revoke_operator_api_key(key=key)
    with pytest.raises(AuthenticationFailed):
        authenticate(_request(rf, authorization=f"Bearer {secret}"))


def test_staff_session_is_accepted(rf):
    staff = get_user_model().objects.create_user("alice", password="alice-password-1", is_staff=True)
    assert authenticate(_request(rf, user=staff)) == "user:alice"


def test_logged_in_non_staff_gets_permission_denied(rf):
    user = get_user_model().objects.create_user("bob", password="bob-password-12")
    with pytest.raises(PermissionDenied):
        authenticate(_request(rf, user=user))


def test_no_credentials_is_authentication_failed(rf):
    with pytest.raises(AuthenticationFailed):
        authenticate(_request(rf))
