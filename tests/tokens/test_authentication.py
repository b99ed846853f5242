"""authenticate_wrapper_token (the /v1 hot path) and extract_bearer_token."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
import redis.asyncio
from asgiref.sync import async_to_sync
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxyproject.lib.errors import AuthenticationFailed, DeviceBlocked, DevicePendingApproval, TokenExpired, TokenRevoked
from tests.tokens.client import bootstrap, jwt_parts
from tokens import device_state
from tokens.authentication import authenticate_wrapper_token, extract_bearer_token
from tokens.device_state import device_state_cache, forget_device_states
from tokens.identity import DeviceIdentity, DevicePolicy
from tokens.models import Device, DeviceStatus, Organization
from tokens.revocation import block_device, revoke_device_tokens, revoke_organization_tokens, revoke_token
from tokens.signing_keys import forget_keyring

# `redis`: device snapshots in Redis when REDIS_URL is set, so CI runs these again on a Redis Cluster.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

authenticate = async_to_sync(authenticate_wrapper_token)


def test_valid_wrapper_token_gives_the_device_identity_and_effective_policy(client, settings):
    settings.RATE_LIMIT_MAX = 100
    settings.DAILY_SPEND_CAP_USD = "5.00"
    settings.MONTHLY_SPEND_CAP_USD = ""
    organization = Organization.objects.create(name="Acme", monthly_spend_cap_usd=Decimal("900.00"), tokens_per_minute=20_000)
    models = "claude-sonnet-*\nclaude-haiku-*"
    device = Device.objects.create(device_id="dev-id", organization=organization, allowed_models=models)
    token = bootstrap(client, "dev-id").json()["wrapper_token"]
    claims = jwt_parts(token)[1]

    identity = authenticate(token)

    assert identity == DeviceIdentity(
        device_id="dev-id",
        device_pk=device.pk,
        org_id=organization.pk,
        jti=claims["jti"],
        expires_at=float(claims["exp"]),
        policy=DevicePolicy(
            requests_per_window=100,
            window_ms=60_000,
            tokens_per_minute=20_000,
            allowed_models=("claude-sonnet-*", "claude-haiku-*"),
            device_daily_cap_usd=Decimal("5.00"),
            device_monthly_cap_usd=Decimal("900.00"),
            org_daily_cap_usd=None,
            org_monthly_cap_usd=Decimal("900.00"),
        ),
    )


def test_a_warm_call_makes_no_database_query(enrolled, django_assert_num_queries):
    # Cold: the keyring (active key, usable keys) and the device state (device+org, revoked ids).
    forget_keyring()
    forget_device_states()
    with django_assert_num_queries(4):
        authenticate(enrolled["wrapper_token"])
    with django_assert_num_queries(0):
        identity = authenticate(enrolled["wrapper_token"])
    assert identity.device_id == "laptop-ada"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"authorization": "Bearer tok-1"}, "tok-1"),
        ({"Authorization": "bearer  tok-2 "}, "tok-2"),
        ({"x-api-key": "tok-3"}, "tok-3"),
        ({"X-Api-Key": "tok-4"}, "tok-4"),
        ({"authorization": "Bearer tok-5", "x-api-key": "other"}, "tok-5"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_extract_bearer_token_reads_authorization_or_x_api_key(headers, expected):
    assert extract_bearer_token(headers) == expected


def test_extract_bearer_token_reads_django_request_headers(rf):
    request = rf.get("/v1/models", headers={"x-api-key": "tok-django"})
    assert extract_bearer_token(request.headers) == "tok-django"


def test_revoked_token_is_refused_and_other_tokens_of_the_device_still_work(client, enrolled):
    authenticate(enrolled["wrapper_token"])
    revoke_token(jti=jwt_parts(enrolled["wrapper_token"])[1]["jti"], actor="test")
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])
    other = bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).json()
    assert authenticate(other["wrapper_token"]).device_id == "laptop-ada"


def test_device_revocation_refuses_earlier_tokens_but_not_later_ones(client, enrolled):
    revoke_device_tokens(device=Device.objects.get(device_id="laptop-ada"), actor="test")
    with pytest.raises(TokenRevoked) as refused:
        authenticate(enrolled["wrapper_token"])
    assert refused.value.response_headers() == {"x-should-retry": "false"}
    again = bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).json()
    assert authenticate(again["wrapper_token"]).device_id == "laptop-ada"


def test_organization_revocation_refuses_its_devices_tokens_only(client):
    organization = Organization.objects.create(name="Acme")
    Device.objects.create(device_id="in-org", organization=organization)
    inside = bootstrap(client, "in-org").json()["wrapper_token"]
    outside = bootstrap(client, "no-org").json()["wrapper_token"]

    revoke_organization_tokens(organization=organization, actor="test")

    with pytest.raises(TokenRevoked):
        authenticate(inside)
    assert authenticate(outside).device_id == "no-org"


def test_blocked_device_is_refused_with_device_blocked(enrolled):
    block_device(device=Device.objects.get(device_id="laptop-ada"), actor="test")
    with pytest.raises(DeviceBlocked):
        authenticate(enrolled["wrapper_token"])


def test_pending_device_is_refused_with_pending_approval(enrolled):
    Device.objects.filter(device_id="laptop-ada").update(status=DeviceStatus.PENDING)
    with pytest.raises(DevicePendingApproval):
        authenticate(enrolled["wrapper_token"])


def test_deleted_device_token_is_refused(enrolled):
    Device.objects.filter(device_id="laptop-ada").delete()
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])


def test_expired_wrapper_token_gets_token_expired(settings):
    import datetime as dt

    from django.utils import timezone

    from tokens.audit import ClientInfo
    from tokens.issuance import issue_token_pair

    settings.JWT_EXPIRATION_HOURS = 1
    device = Device.objects.create(device_id="dev-expired")
    pair = issue_token_pair(device=device, client=ClientInfo(), now=timezone.now() - dt.timedelta(hours=1, seconds=1))
    with pytest.raises(TokenExpired) as expired:
        authenticate(pair.wrapper_token)
    assert expired.value.message == "Token expired. Please refresh your token."
    assert expired.value.response_headers() == {}


def test_empty_token_is_refused():
    with pytest.raises(AuthenticationFailed):
        authenticate("")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_another_process_revocation_is_seen_once_the_cache_ages_out(enrolled, settings, monkeypatch):
    """This process holds a copy from before the revocation (as another gateway process would): it
    keeps it for REVOCATION_CACHE_SECONDS, then reads the shared state and refuses."""
    settings.REVOCATION_CACHE_SECONDS = 2.0
    clock = FakeClock()
    monkeypatch.setattr(device_state_cache, "clock", clock)
    authenticate(enrolled["wrapper_token"])
    stale = device_state_cache.entries["laptop-ada"][0]

    revoke_device_tokens(device=Device.objects.get(device_id="laptop-ada"), actor="elsewhere")
    device_state_cache.put("laptop-ada", stale)

    clock.now += 1.9
    assert authenticate(enrolled["wrapper_token"]).device_id == "laptop-ada"
    clock.now += 0.1
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])


def test_with_redis_down_the_state_comes_from_the_database(enrolled, monkeypatch):
    unreachable = {"host": "127.0.0.1", "port": 9, "socket_connect_timeout": 0.5}
    async_client = redis.asyncio.Redis(**unreachable, retry=AsyncRetry(NoBackoff(), 0))
    monkeypatch.setattr(device_state, "get_async_redis", lambda: async_client)
    monkeypatch.setattr(device_state, "get_sync_redis", lambda: redis.Redis(**unreachable, retry=Retry(NoBackoff(), 0)))
    assert authenticate(enrolled["wrapper_token"]).device_id == "laptop-ada"
    block_device(device=Device.objects.get(device_id="laptop-ada"), actor="test")
    with pytest.raises(DeviceBlocked):
        authenticate(enrolled["wrapper_token"])
