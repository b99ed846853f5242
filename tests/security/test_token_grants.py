"""A stolen token dies: the wrapper and the refresh token issued with it are one grant, spent by
exchanging either member; a second exchange of any member is reuse and revokes the whole family."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import httpx
import orjson
import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import Client

from proxyproject.lib.errors import TokenRevoked
from tests.gateway.conftest import bearer, call_gateway
from tests.servers import gateway_process
from tests.tokens.client import bootstrap, error_of, jwt_parts, refresh, refresh_with_bearer
from tokens.authentication import authenticate_wrapper_token
from tokens.models import AuditEvent, AuditKind, IssuedToken

authenticate = async_to_sync(authenticate_wrapper_token)
MESSAGE = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(autouse=True)
def open_enrollment(settings):
    """Open enrollment, and a Redis key space of this test's own: device ids repeat across tests."""
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_MODE = "open"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000


@pytest.fixture
def owner(client: Client) -> dict:
    body = bootstrap(client, "grant-owner").json()
    return {**body, "device_id": "grant-owner"}


def _family_is_dead(family: str) -> bool:
    return not IssuedToken.objects.filter(family=family, revoked_at__isnull=True).exists()


def _v1_status(token: str) -> tuple[int, str]:
    answer = async_to_sync(call_gateway)("POST", "/v1/messages", headers=bearer(token), body=MESSAGE)
    return answer.status, orjson.loads(answer.body)["error"]["details"]["error_code"]


@pytest.mark.django_db
def test_thief_refreshing_with_the_stolen_wrapper_is_caught_when_the_owner_refreshes(client, owner):
    stolen = refresh_with_bearer(client, owner["wrapper_token"])
    assert stolen.status_code == 200
    thief = stolen.json()

    owner_refresh = refresh(client, owner["refresh_token"])

    assert error_of(owner_refresh) == (401, "authentication_error", "refresh_token_reused")
    family = jwt_parts(owner["wrapper_token"])[1]["fam"]
    assert _family_is_dead(family)
    assert error_of(refresh(client, thief["refresh_token"])) == (401, "authentication_error", "token_revoked")
    assert error_of(refresh_with_bearer(client, thief["wrapper_token"])) == (401, "authentication_error", "token_revoked")
    with pytest.raises(TokenRevoked):
        authenticate(thief["wrapper_token"])
    event = AuditEvent.objects.get(kind=AuditKind.REUSE_DETECTED)
    assert (event.jti, event.detail["presented_kind"], event.detail["revoked_tokens"]) == (
        jwt_parts(owner["refresh_token"])[1]["jti"],
        "refresh",
        4,
    )


@pytest.mark.django_db
def test_thief_refreshing_with_the_stolen_refresh_token_after_the_owner_used_its_wrapper_is_caught(client, owner):
    owner_refresh = refresh_with_bearer(client, owner["wrapper_token"])
    assert owner_refresh.status_code == 200
    rotated = owner_refresh.json()

    thief_refresh = refresh(client, owner["refresh_token"])

    assert error_of(thief_refresh) == (401, "authentication_error", "refresh_token_reused")
    assert _family_is_dead(jwt_parts(owner["wrapper_token"])[1]["fam"])
    assert error_of(refresh(client, rotated["refresh_token"])) == (401, "authentication_error", "token_revoked")
    with pytest.raises(TokenRevoked):
        authenticate(rotated["wrapper_token"])


@pytest.mark.django_db
def test_thief_holding_the_refresh_token_refreshing_first_is_caught_by_the_owner_wrapper(client, owner):
    thief = refresh(client, owner["refresh_token"]).json()

    owner_refresh = refresh_with_bearer(client, owner["wrapper_token"])

    assert error_of(owner_refresh) == (401, "authentication_error", "refresh_token_reused")
    assert error_of(refresh(client, thief["refresh_token"])) == (401, "authentication_error", "token_revoked")
    event = AuditEvent.objects.get(kind=AuditKind.REUSE_DETECTED)
    assert event.detail["presented_kind"] == "access"


@pytest.mark.django_db(transaction=True)
def test_owner_after_a_theft_is_refused_and_must_bootstrap_again_with_its_device_secret():
    client = Client()
    owner = bootstrap(client, "grant-owner").json()
    thief = refresh_with_bearer(client, owner["wrapper_token"]).json()
    assert error_of(refresh(client, owner["refresh_token"]))[2] == "refresh_token_reused"

    assert _v1_status(owner["wrapper_token"]) == (401, "token_revoked")
    assert _v1_status(thief["wrapper_token"]) == (401, "token_revoked")
    assert error_of(bootstrap(client, "grant-owner")) == (401, "authentication_error", "device_secret_invalid")
    again = bootstrap(client, "grant-owner", device_secret=owner["device_secret"])
    assert again.status_code == 200
    assert authenticate(again.json()["wrapper_token"]).device_id == "grant-owner"


@pytest.mark.django_db
@pytest.mark.parametrize("revoked_member", ["wrapper_token", "refresh_token"])
def test_revoke_token_on_one_member_kills_its_sibling(client, owner, revoked_member):
    call_command("revoke_token", jwt_parts(owner[revoked_member])[1]["jti"], "--yes", stdout=open("/dev/null", "w"))

    assert error_of(refresh(client, owner["refresh_token"])) == (401, "authentication_error", "token_revoked")
    assert error_of(refresh_with_bearer(client, owner["wrapper_token"])) == (401, "authentication_error", "token_revoked")
    with pytest.raises(TokenRevoked):
        authenticate(owner["wrapper_token"])
    assert (
        IssuedToken.objects.filter(
            grant=IssuedToken.objects.get(jti=jwt_parts(owner["wrapper_token"])[1]["jti"]).grant, revoked_at__isnull=False
        ).count()
        == 2
    )


def _exchange_15_times_at_once(servers: list, owner: dict, member: str) -> list[httpx.Response]:
    request = (
        {"headers": {"authorization": f"Bearer {owner[member]}"}}
        if member == "wrapper_token"
        else {"json": {"refresh_token": owner[member]}}
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=15) as pool:
        return list(
            pool.map(lambda index: httpx.post(servers[index % len(servers)].url + "/refresh", timeout=30, **request), range(15))
        )


@pytest.mark.django_db(transaction=True)
def test_the_same_member_exchanged_15_times_at_once_succeeds_exactly_once():
    """Across two server processes, so the exchanges race in the database, not in one process."""
    servers = [gateway_process(ENROLLMENT_MODE="open", ENROLLMENT_RATE_LIMIT_MAX="100000").start() for _ in range(2)]
    answers = {}
    try:
        for member in ("wrapper_token", "refresh_token"):
            owner = httpx.post(
                servers[0].url + "/bootstrap", json={"device_id": f"race-{member}", "app_version": "1"}, timeout=10
            ).json()
            answers[member] = (owner, _exchange_15_times_at_once(servers, owner, member))
    finally:
        for server in servers:
            server.stop()

    for member, (owner, responses) in answers.items():
        assert sorted(response.status_code for response in responses) == [200] + [401] * 14, member
        codes = {response.json()["error"]["details"]["error_code"] for response in responses if response.status_code == 401}
        assert "refresh_token_reused" in codes and codes <= {"refresh_token_reused", "token_revoked"}, codes
        assert IssuedToken.objects.filter(device__device_id=f"race-{member}").count() == 4
        assert _family_is_dead(jwt_parts(owner["wrapper_token"])[1]["fam"])


@pytest.mark.django_db(transaction=True)
def test_split_attack_across_two_gateway_processes_is_refused_everywhere(two_gateways, settings):
    _, first, second = two_gateways
    owner = httpx.post(first.url + "/bootstrap", json={"device_id": "grant-split", "app_version": "1"}, timeout=10).json()
    thief = httpx.post(first.url + "/refresh", headers={"authorization": f"Bearer {owner['wrapper_token']}"}, timeout=10).json()
    assert (
        httpx.post(first.url + "/v1/messages", headers=bearer(thief["wrapper_token"]), content=MESSAGE, timeout=10).status_code
        == 200
    )

    reused = httpx.post(second.url + "/refresh", json={"refresh_token": owner["refresh_token"]}, timeout=10)
    assert (reused.status_code, reused.json()["error"]["details"]["error_code"]) == (401, "refresh_token_reused")

    deadline = time.monotonic() + 5.0
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = httpx.post(
            first.url + "/v1/messages", headers=bearer(thief["wrapper_token"]), content=MESSAGE, timeout=10
        ).status_code
    assert status == 401
