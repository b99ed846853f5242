"""Contract tests of what gateway processes share about the key pool (`gateway.keypool_shared`):
the same cases on the local backend and (CI's second pass) Redis. A backend either shares exactly or
says it cannot tell (None); it never answers a guess."""

from __future__ import annotations

import secrets

import pytest

from gateway.keypool_shared import LocalPoolSharing, PoolSharing, RedisPoolSharing


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def sharing(request) -> PoolSharing:
    if request.param == "redis":
        request.getfixturevalue("redis_required")
        return RedisPoolSharing()
    return LocalPoolSharing()


def shares(sharing: PoolSharing) -> bool:
    return isinstance(sharing, RedisPoolSharing)


def key_id() -> int:
    return secrets.randbelow(10**9) + 10**9  # one no other test (or process sharing the Redis) reports


async def test_in_flight_counts_are_exact_or_unknown(sharing):
    key = key_id()
    for _ in range(3):
        sharing.count_in_flight(key, 1)
    sharing.count_in_flight(key, -1)
    await sharing.report_in_flight()
    assert sharing.in_flight_counts([key]) == ({key: 2} if shares(sharing) else None)


async def test_a_key_whose_requests_ended_counts_zero_once_reported(sharing):
    key = key_id()
    sharing.count_in_flight(key, 1)
    await sharing.report_in_flight()
    sharing.count_in_flight(key, -1)
    await sharing.report_in_flight()
    assert sharing.in_flight_counts([key]) == ({key: 0} if shares(sharing) else None)


async def test_an_announced_change_moves_the_shared_version(sharing):
    before = await sharing.read_version()
    sharing.announce_change()
    after = await sharing.read_version()
    if shares(sharing):
        assert before is not None and after is not None and int(after) == int(before) + 1
    else:
        assert (before, after) == (None, None)


def test_asking_for_no_keys_answers_no_counts_or_unknown(sharing):
    assert sharing.in_flight_counts([]) == ({} if shares(sharing) else None)
