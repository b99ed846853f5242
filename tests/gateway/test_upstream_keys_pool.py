"""The key pool on the request path, through the ASGI app and the fake upstream on a real socket:
spread by weight, rejected keys flagged, rate-limited keys cooled down, connection failures moved to
another key, requests counted in flight, and no database work per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import orjson
from asgiref.sync import async_to_sync, sync_to_async
from django.db import DatabaseError
from django.db.backends.utils import CursorWrapper

from gateway import keypool
from gateway.keypool import KeyPool, local_in_flight
from gateway.keypool_shared import (
    count_in_flight,
    process_name,
    report_in_flight,
    shared_in_flight_counts,
)
from gateway.models import UpstreamKey
from gateway.upstream_keys import ENVIRONMENT_KEY_NAME, add_upstream_key, rotate_upstream_key
from proxyproject.lib.redis import get_sync_redis, redis_key, slot_tag
from tests.gateway.conftest import bearer, call_gateway
from tests.support import MASTER_KEY, MESSAGE_BODY, STREAM_BODY, apoll_until

SECOND = "sk-ant-api03-second-" + "s" * 30 + "S3C0"
REJECTED = "sk-ant-api03-revoked-" + "r" * 30 + "R3V0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def preferring(name: str):
    """A pick that takes `name` whenever it is a candidate: makes "which key goes first" certain."""

    def pick(keys, weights):
        return next((key for key in keys if key.credential.name == name), keys[0])

    return pick


def use_pool(monkeypatch, **options) -> KeyPool:
    pool = KeyPool(**options)
    monkeypatch.setattr(keypool, "_pool", pool)
    return pool


async def add_key(name: str, secret: str, weight: int = 1) -> UpstreamKey:
    return await sync_to_async(add_upstream_key)(name=name, secret=secret, weight=weight, actor="test")


async def key(name: str) -> UpstreamKey:
    return await UpstreamKey.objects.aget(name=name)


async def message(token: str, **headers: str):
    return await call_gateway("POST", "/v1/messages", headers=bearer(token, **headers), body=MESSAGE_BODY)


def keys_seen(fake) -> list[str]:
    return [request.api_key_used for request in fake.requests]


async def test_the_environment_key_seeds_the_pool_on_the_first_request(fake_upstream, token):
    assert (await message(token)).status == 200
    seeded = await key(ENVIRONMENT_KEY_NAME)
    assert (seeded.state, seeded.from_environment, seeded.secret_last4) == ("active", True, MASTER_KEY[-4:])
    assert keys_seen(fake_upstream) == [MASTER_KEY[-4:]]


async def test_requests_spread_over_the_active_keys(fake_upstream, token):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    statuses = [(await message(token)).status for _ in range(40)]
    assert statuses == [200] * 40
    assert set(keys_seen(fake_upstream)[1:]) == {MASTER_KEY[-4:], SECOND[-4:]}


async def test_the_share_of_each_key_follows_its_weight(fake_upstream, transactional_db, settings):
    await add_key("heavy", SECOND, weight=3)
    await add_key("light", REJECTED, weight=1)
    settings.ANTHROPIC_API_KEY = ""
    pool = KeyPool()
    picks = Counter([(await pool.choose()).name for _ in range(4000)])
    assert set(picks) == {"heavy", "light"}
    assert 2800 <= picks["heavy"] <= 3200  # 3000 expected; the bounds are more than 8 standard deviations wide


def calls_seen(fake) -> list[tuple[str, str]]:
    return [(request.path, request.api_key_used) for request in fake.requests]


async def test_a_key_the_upstream_rejects_is_flagged_and_the_request_retried_on_another(
    fake_upstream, token, monkeypatch, caplog
):
    use_pool(monkeypatch, pick=preferring("revoked"))
    assert (await message(token)).status == 200
    await add_key("revoked", REJECTED)
    assert (await message(token)).status == 200
    assert [(await message(token)).status for _ in range(3)] == [200] * 3
    assert (
        calls_seen(fake_upstream)
        == [
            ("/v1/messages", MASTER_KEY[-4:]),
            ("/v1/messages", REJECTED[-4:]),
            ("/v1/models", REJECTED[-4:]),  # the check: refused too, so the key is at fault
        ]
        + [("/v1/messages", MASTER_KEY[-4:])] * 4
    )
    flagged = await apoll_until(lambda: UpstreamKey.objects.filter(name="revoked", flagged_at__isnull=False).afirst())
    assert (flagged.state, flagged.flagged_reason) == ("active", "Upstream answered 401")
    assert REJECTED not in caplog.text


async def test_with_no_key_left_the_device_gets_503_upstream_auth_failed_not_401(fake_upstream, token, monkeypatch):
    use_pool(monkeypatch)
    assert (await message(token)).status == 200
    fake_upstream.set_api_keys(set())  # the environment key revoked at Anthropic
    answer = await message(token)
    error = orjson.loads(answer.body)["error"]
    assert (answer.status, error["type"], error["details"]["error_code"]) == (503, "api_error", "upstream_auth_failed")
    assert (answer.headers["retry-after"], answer.headers.get("x-should-retry")) == ("10", None)
    assert (await message(token)).status == 503
    assert calls_seen(fake_upstream)[1:] == [("/v1/messages", MASTER_KEY[-4:]), ("/v1/models", MASTER_KEY[-4:])]


async def test_a_key_answered_403_by_the_check_too_is_taken_out(fake_upstream, token, monkeypatch):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    use_pool(monkeypatch, pick=preferring("second"))
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    fake_upstream.set_forbidden_api_keys({SECOND})
    assert [(await message(token)).status for _ in range(2)] == [200, 200]
    assert [path for path, used in calls_seen(fake_upstream)[1:] if used == SECOND[-4:]] == ["/v1/messages", "/v1/models"]
    flagged = await apoll_until(lambda: UpstreamKey.objects.filter(name="second", flagged_at__isnull=False).afirst())
    assert flagged.flagged_reason == "Upstream answered 403"


async def test_a_403_about_the_request_is_relayed_and_the_key_stays(fake_upstream, token, monkeypatch, caplog):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    use_pool(monkeypatch, pick=preferring("second"))
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    statuses = [(await message(token, **{"x-fake-fault": "403"})).status for _ in range(3)]
    assert statuses + [(await message(token)).status] == [403, 403, 403, 200]
    # One check, trusted afterwards: refusals of its own requests cannot make a device flood the upstream with checks.
    assert (
        calls_seen(fake_upstream)[1:]
        == [("/v1/messages", SECOND[-4:]), ("/v1/models", SECOND[-4:])] + [("/v1/messages", SECOND[-4:])] * 3
    )
    assert not await UpstreamKey.objects.filter(name="second", flagged_at__isnull=False).aexists()
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream refused a request, not the key"]
    assert (line.event_fields["upstreamKey"], line.event_fields["status"]) == ("second", 403)


async def test_a_rate_limited_key_cools_down_for_its_retry_after(fake_upstream, token, monkeypatch, caplog):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    clock = Clock()
    use_pool(monkeypatch, clock=clock, pick=preferring("second"))
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    limited = await message(token, **{"x-fake-fault": "429=20"})
    assert (limited.status, limited.headers["retry-after"]) == (429, "20")
    clock.now += 19
    assert (await message(token)).status == 200
    clock.now += 1.5
    assert (await message(token)).status == 200
    assert keys_seen(fake_upstream)[1:] == [SECOND[-4:], MASTER_KEY[-4:], SECOND[-4:]]
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key cooling down"]
    assert (line.event_fields["upstreamKey"], line.event_fields["seconds"]) == ("second", 20.0)


async def test_with_every_key_cooling_down_the_one_free_soonest_is_used(fake_upstream, token, monkeypatch):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    clock = Clock()
    use_pool(monkeypatch, clock=clock, pick=preferring("second"))
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    assert (await message(token, **{"x-fake-fault": "429=30"})).status == 429
    assert (await message(token, **{"x-fake-fault": "429=10"})).status == 429
    assert (await message(token)).status == 200
    assert keys_seen(fake_upstream)[1:] == [SECOND[-4:], MASTER_KEY[-4:], MASTER_KEY[-4:]]


async def test_a_connection_failure_before_any_byte_moves_the_request_to_another_key(fake_upstream, token):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    answer = await message(token, **{"x-fake-fault": "drop-before-response"})
    assert answer.status == 502
    assert sorted(keys_seen(fake_upstream)[1:]) == sorted([MASTER_KEY[-4:], SECOND[-4:]])


async def test_a_rotation_here_takes_effect_on_the_next_request(fake_upstream, token):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    assert (await message(token)).status == 200
    await sync_to_async(rotate_upstream_key)(name=ENVIRONMENT_KEY_NAME, secret=SECOND, new_name="second", actor="test")
    assert [(await message(token)).status for _ in range(5)] == [200] * 5
    assert keys_seen(fake_upstream) == [MASTER_KEY[-4:]] + [SECOND[-4:]] * 5


async def test_draining_keys_carry_requests_when_no_active_key_works(fake_upstream, token, monkeypatch):
    assert (await message(token)).status == 200
    await sync_to_async(rotate_upstream_key)(name=ENVIRONMENT_KEY_NAME, secret=REJECTED, new_name="mistyped", actor="test")
    assert [(await message(token)).status for _ in range(4)] == [200] * 4
    assert keys_seen(fake_upstream) == [MASTER_KEY[-4:], REJECTED[-4:], REJECTED[-4:]] + [MASTER_KEY[-4:]] * 4


def shared_count(key_id: int, redis_url: str, count: int) -> dict[int, int] | None:
    """What the shared counter must read: nothing is known without Redis."""
    return {key_id: count} if redis_url else None


async def test_requests_count_in_flight_on_their_key_until_the_stream_ends(fake_upstream, token, settings):
    assert (await message(token)).status == 200
    seeded = await key(ENVIRONMENT_KEY_NAME)
    slow = bearer(token, **{"x-fake-stream": "events=20,interval_ms=50"})
    stream = asyncio.ensure_future(call_gateway("POST", "/v1/messages", headers=slow, body=STREAM_BODY))
    await apoll_until(lambda: _async(local_in_flight() == {ENVIRONMENT_KEY_NAME: 1}))
    one = shared_count(seeded.pk, settings.REDIS_URL, 1)
    await apoll_until(lambda: _async(shared_in_flight_counts([seeded.pk]) == one))
    answer = await stream
    assert answer.status == 200 and answer.body.endswith(b'data: {"type":"message_stop"}\n\n')
    assert local_in_flight() == {}
    zero = shared_count(seeded.pk, settings.REDIS_URL, 0)
    await apoll_until(lambda: _async(shared_in_flight_counts([seeded.pk]) == zero))  # within IN_FLIGHT_REPORT_SECONDS


async def test_a_client_leaving_mid_stream_releases_its_key(fake_upstream, token, settings):
    assert (await message(token)).status == 200
    seeded = await key(ENVIRONMENT_KEY_NAME)
    slow = bearer(token, **{"x-fake-stream": "events=50,interval_ms=100"})
    answer = await call_gateway("POST", "/v1/messages", headers=slow, body=STREAM_BODY, leave_after_first_chunk=True)
    assert answer.chunks[0].startswith(b"event: message_start")
    assert local_in_flight() == {}
    zero = shared_count(seeded.pk, settings.REDIS_URL, 0)
    await apoll_until(lambda: _async(shared_in_flight_counts([seeded.pk]) == zero))


async def _async(value):
    return value


async def test_secrets_are_decrypted_once_and_warm_requests_make_no_query(fake_upstream, token, monkeypatch):
    fake_upstream.set_api_keys({MASTER_KEY, SECOND})
    assert (await message(token)).status == 200
    await add_key("second", SECOND)
    decrypted: list[str] = []
    original_decrypt = keypool.decrypt_secret
    monkeypatch.setattr(keypool, "decrypt_secret", lambda token_: decrypted.append(token_) or original_decrypt(token_))
    keypool.forget_upstream_key_pool()
    assert (await message(token)).status == 200
    queries: list[str] = []
    original_execute = CursorWrapper.execute
    monkeypatch.setattr(
        CursorWrapper, "execute", lambda self, sql, params=None: queries.append(sql) or original_execute(self, sql, params)
    )
    assert [(await message(token)).status for _ in range(20)] == [200] * 20
    assert queries == []
    assert len(decrypted) == 2


async def test_the_environment_key_serves_while_the_database_cannot_be_read(fake_upstream, token, monkeypatch, caplog):
    def unreadable(*args):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(keypool, "load_pool_snapshot", unreadable)
    assert (await message(token)).status == 200
    assert keys_seen(fake_upstream) == [MASTER_KEY[-4:]]
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key pool not reloaded"]
    assert (line.event_fields["error"], line.event_fields["keptKeys"]) == (
        "DatabaseError('connection refused')",
        [ENVIRONMENT_KEY_NAME],
    )
    assert MASTER_KEY not in caplog.text


async def test_without_any_key_requests_get_503_no_upstream_key(fake_upstream, token, settings):
    settings.ANTHROPIC_API_KEY = ""
    answer = await message(token)
    error = orjson.loads(answer.body)["error"]
    assert (answer.status, error["details"]["error_code"]) == (503, "no_upstream_key")
    assert fake_upstream.requests == []


async def test_counters_reach_the_database_without_a_write_per_request(fake_upstream, token, monkeypatch):
    clock = Clock()
    use_pool(monkeypatch, clock=clock)
    for headers in ({}, {}, {"x-fake-fault": "500"}, {"x-fake-fault": "429"}):
        await message(token, **headers)
    row = await key(ENVIRONMENT_KEY_NAME)
    assert (row.request_count, row.last_used_at) == (0, None)
    clock.now += keypool.STATS_FLUSH_SECONDS
    await message(token)
    await keypool.settle_upstream_key_pool()
    row = await key(ENVIRONMENT_KEY_NAME)
    assert (row.request_count, row.server_error_count, row.rate_limited_count, row.rejected_count) == (4, 1, 1, 0)
    assert row.last_used_at is not None


async def test_pool_loads_are_logged_without_secrets(fake_upstream, token, caplog):
    caplog.set_level(logging.INFO)
    await message(token)
    [line] = [record for record in caplog.records if record.getMessage() == "Upstream key pool loaded"]
    assert (line.event_fields["active"], line.event_fields["draining"]) == ([ENVIRONMENT_KEY_NAME], [])
    assert MASTER_KEY not in caplog.text


def test_every_process_reports_its_own_count_and_a_gone_process_stops_counting(redis_required):
    """Counts are summed over the processes' reports; the report of a process that died mid-request
    expires and no longer holds a draining key back."""
    key_id = 10**8 + int(time.time() * 1000) % 10**6
    client = get_sync_redis()
    reporters = redis_key("upstream-keys", slot_tag("in-flight", key_id), "reporters")

    def report(process: str, count: int, live_ms: int) -> None:
        client.set(redis_key("upstream-keys", slot_tag("in-flight", key_id), process), count, px=live_ms)
        client.sadd(reporters, process)

    report("host-a:1:aa", 2, 60_000)
    report("host-b:7:bb", 3, 60_000)
    report("host-c:9:cc", 4, 1)
    time.sleep(0.01)
    try:
        assert shared_in_flight_counts([key_id]) == {key_id: 5}
        assert b"host-c:9:cc" not in client.smembers(reporters)  # the dead one is forgotten
        count_in_flight(key_id, 1)
        async_to_sync(report_in_flight)()
        assert shared_in_flight_counts([key_id]) == {key_id: 6}
        count_in_flight(key_id, -1)
        async_to_sync(report_in_flight)()
        assert shared_in_flight_counts([key_id]) == {key_id: 5}
        assert process_name().encode() not in client.smembers(reporters)
    finally:
        client.delete(
            reporters,
            *(redis_key("upstream-keys", slot_tag("in-flight", key_id), name) for name in ("host-a:1:aa", "host-b:7:bb")),
        )


async def test_counters_reach_the_database_when_no_request_follows(fake_upstream, token, monkeypatch):
    monkeypatch.setattr(keypool, "STATS_FLUSH_SECONDS", 0.2)
    use_pool(monkeypatch)
    await message(token)
    await message(token, **{"x-fake-fault": "500"})

    async def counted():
        row = await key(ENVIRONMENT_KEY_NAME)
        return (row.request_count, row.server_error_count) == (2, 1)

    await apoll_until(counted)
