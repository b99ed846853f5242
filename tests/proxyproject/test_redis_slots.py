"""Every Redis script can run on a Redis Cluster: it declares every key it touches in KEYS (a cluster
routes a script by its declared keys; a key built inside the script may live on another node), and
the keys of one call hash to one slot. Runs without Redis: the scripts are read from the source, and
the callers talk to a recording client that computes each call's slots as a cluster would."""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest
from redis.crc import key_slot

from gateway import keypool_shared
from gateway.breaker import RedisBreakerBackend
from gateway.breaker import redis as breaker_redis
from gateway.policy import requests_key, tokens_key
from proxyproject.lib.ratelimit import LimitCheck, RedisRateLimiter
from proxyproject.lib.redis import redis_key
from tests.usage.cast import identity_with
from tokens import device_state
from usage import queue
from usage.spend import cap_checks
from usage.spend import redis as spend_redis
from usage.spend.redis import RedisSpendBackend

BASE_DIR = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("proxyproject", "tokens", "usage", "gateway")
KEYLESS_COMMANDS = {"TIME"}
CALL = re.compile(r"redis\.call\(\s*'(?P<command>\w+)'\s*(?:,\s*(?P<key>[^,)]+))?")


def lua_scripts() -> dict[str, str]:
    """Every Lua script in the platform's source: the string constants that call Redis."""
    scripts = {}
    for package in SOURCE_PACKAGES:
        for path in sorted((BASE_DIR / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                    scripts[f"{path.relative_to(BASE_DIR)}:{node.lineno}"] = node.value
    return scripts


def undeclared_keys(script: str) -> list[str]:
    """The key arguments of `redis.call` that are not KEYS[...] or a name bound to one."""
    bound = set(re.findall(r"for\s+\w+\s*,\s*(\w+)\s+in\s+ipairs\(KEYS\)", script))
    bound |= set(re.findall(r"local\s+(\w+)\s*=\s*KEYS\[[^\]]+\]\s*$", script, flags=re.MULTILINE))
    wrong = []
    for call in CALL.finditer(script):
        if call["command"].upper() in KEYLESS_COMMANDS:
            continue
        key = (call["key"] or "").strip()
        if not (re.fullmatch(r"KEYS\[[^\]]+\]", key) or key in bound):
            wrong.append(call.group(0))
    return wrong


def test_the_platform_has_the_scripts_this_test_reads():
    """Guards the reader: if it found nothing, the test below would pass on nothing."""
    assert len(lua_scripts()) >= 9


@pytest.mark.parametrize("where", sorted(lua_scripts()))
def test_every_script_declares_every_key_it_touches(where):
    assert undeclared_keys(lua_scripts()[where]) == []


def test_a_script_that_builds_a_key_inside_is_caught():
    built = "local bucket = KEYS[1] .. ':' .. ARGV[1]\nredis.call('INCRBY', bucket, 1)\n"
    assert undeclared_keys(built) == ["redis.call('INCRBY', bucket"]
    assert undeclared_keys("for i, key in ipairs(KEYS) do redis.call('HGET', key, 'x') end") == []


class RecordingClient:
    """Answers like a Redis Cluster would route: records the slots of each call's keys."""

    def __init__(self, reply: object = 0, members: tuple[bytes, ...] = ()) -> None:
        self.reply = reply
        self.members = members
        self.calls: list[tuple[str, list[str]]] = []

    def record(self, name: str, keys: list) -> object:
        self.calls.append((name, [key.decode() if isinstance(key, bytes) else str(key) for key in keys]))
        return self.reply

    def eval(self, script: str, numkeys: int, *args: object) -> object:
        return self.record("eval", list(args[:numkeys]))

    def mget(self, keys: list, *more: object) -> object:
        return self.record("mget", [*keys, *more] if isinstance(keys, list) else [keys, *more])

    def pipeline(self, transaction: bool = True) -> RecordingClient:
        return self

    def execute_command(self, command: str, script: str, numkeys: int, *args: object) -> object:
        assert command == "EVAL"
        return self.eval(script, numkeys, *args)

    def execute(self) -> list[object]:
        return []

    def smembers(self, key: str) -> set[bytes]:
        return set(self.members)

    def srem(self, key: str, *members: object) -> int:
        return 0

    def register_script(self, source: str):
        client = self

        class Script:
            def __call__(self, keys: list, args: list) -> object:
                return client.record("script", keys)

        return Script()


class AsyncRecordingClient(RecordingClient):
    async def eval(self, script: str, numkeys: int, *args: object) -> object:
        return self.record("eval", list(args[:numkeys]))

    def register_script(self, source: str):
        client = self

        class Script:
            async def __call__(self, keys: list, args: list) -> object:
                return client.record("script", keys)

        return Script()


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def assert_one_slot_per_call(client: RecordingClient) -> None:
    assert client.calls, "the caller made no Redis call"
    for name, keys in client.calls:
        assert len(slots(keys)) == 1, f"{name} mixes slots: {keys}"


def test_a_key_of_another_slot_is_caught():
    client = RecordingClient()
    client.eval("", 2, redis_key("spend", "device:1"), redis_key("spend", "org:1"))
    with pytest.raises(AssertionError, match="mixes slots"):
        assert_one_slot_per_call(client)


async def test_the_rate_limits_of_one_device_share_a_slot(monkeypatch):
    client = AsyncRecordingClient(reply=[1, 0, 0, 0, 1, 0, 0, 0, 1_800_000_000_000])
    monkeypatch.setattr("proxyproject.lib.ratelimit.redis.require_async_redis", lambda: client)
    monkeypatch.setattr("proxyproject.lib.ratelimit.redis.get_resp_client", lambda: None)  # the keys, not the client
    identity = identity_with(device_pk=41)
    limiter = RedisRateLimiter()
    checks = [LimitCheck(requests_key(identity), 100, 60000), LimitCheck(tokens_key(identity), 1000, 60000, 5)]
    assert [decision.allowed for decision in await limiter.hit(checks)] == [True, True]
    await limiter.add(tokens_key(identity), 60000, 10)
    assert_one_slot_per_call(client)
    assert len(client.calls[0][1]) == 2


async def test_on_a_cluster_a_reservation_takes_one_slot_per_subject(monkeypatch, settings):
    """A device's counters and its organization's are two scripts on a cluster, one slot each;
    reconciliation and repricing group counters the same way."""
    settings.REDIS_CLUSTER = True
    client = AsyncRecordingClient(reply=[100, 0, 0, 0])  # the reserve script's answer: all 100 granted
    sync_client = RecordingClient(reply=0)
    monkeypatch.setattr(spend_redis, "get_async_redis", lambda: client)
    monkeypatch.setattr(spend_redis, "get_sync_redis", lambda: sync_client)
    identity = identity_with(
        device_pk=7, org_id=3, device_daily=Decimal(1), device_monthly=Decimal(5), org_daily=Decimal(9), org_monthly=Decimal(20)
    )
    checks = cap_checks(identity, 1_800_000_000.0)
    backend = RedisSpendBackend()
    assert (await backend.reserve(checks, 100, "req-1", 1_800_000_000.0, 600)).granted == 100
    counters = tuple(check.counter for check in checks)
    await backend.finish(counters, "req-1", 90, 1_800_000_000.0)
    other = cap_checks(identity_with(device_pk=8, org_id=4, device_daily=Decimal(1)), 1_800_000_000.0)[0].counter
    backend.raise_settled_to({counters[0]: 5, other: 6, counters[3]: 7})
    backend.adjust_settled({counters[3]: -5, other: 2})
    assert [len(keys) for _, keys in client.calls] == [2, 2, 2, 2]
    assert [len(keys) for _, keys in sync_client.calls] == [1, 1, 1, 1, 1]
    assert_one_slot_per_call(client)
    assert_one_slot_per_call(sync_client)


async def test_on_a_single_redis_a_reservation_is_one_script_over_every_counter(monkeypatch, settings):
    settings.REDIS_CLUSTER = False
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    client = AsyncRecordingClient(reply=[100, 0, 0, 0])
    monkeypatch.setattr(spend_redis, "get_async_redis", lambda: client)
    identity = identity_with(
        device_pk=7, org_id=3, person_id=5, device_daily=Decimal(1), org_daily=Decimal(9), person_daily=Decimal(4)
    )
    checks = cap_checks(identity, 1_800_000_000.0)
    assert (await RedisSpendBackend().reserve(checks, 100, "req-1", 1_800_000_000.0, 600)).granted == 100
    assert [len(keys) for _, keys in client.calls] == [3]


def test_the_spend_counters_of_two_organizations_land_in_different_slots():
    first, second = (
        cap_checks(identity_with(device_pk=7, org_id=org, org_monthly=Decimal(9)), 1_800_000_000.0) for org in (3, 4)
    )
    assert slots([spend_redis._key(first[0].counter)]) != slots([spend_redis._key(second[0].counter)])


def test_a_device_s_counters_do_not_depend_on_its_organization_or_person():
    """So moving a device leaves its counters where they are."""
    keys = {
        spend_redis._key(
            cap_checks(identity_with(device_pk=7, org_id=org, person_id=person, device_monthly=Decimal(5)), 1_800_000_000.0)[
                0
            ].counter
        )
        for org, person in ((3, None), (4, 5), (None, 6))
    }
    assert len(keys) == 1


class QueueRecordingClient(RecordingClient):
    """Also records the survey's reads, and answers a pipeline with one reply per command sent."""

    def pipeline(self, transaction: bool = True) -> QueueRecordingClient:
        self.pipelined_from = len(self.calls)
        return self

    def execute(self) -> list[object]:
        return [self.reply] * (len(self.calls) - self.pipelined_from)

    def llen(self, key: str) -> object:
        return self.record("llen", [key])

    def smembers(self, key: str) -> set[bytes]:
        self.record("smembers", [key])
        return set(self.members)


@pytest.mark.parametrize("shard", [0, 5])
def test_the_usage_queue_claims_returns_and_recovers_within_one_slot_per_shard(settings, shard):
    settings.USAGE_WRITER_LEASE_SECONDS = 30
    client = QueueRecordingClient(reply=0)
    queue.claim_batch(client, shard, 100)
    queue.return_batch(client, shard)
    queue.recover_abandoned_batches(client, [queue.ShardState(shard, 0, 0, frozenset({"writer-a", "writer-b"}))])
    assert [len(keys) for _, keys in client.calls] == [4, 2, 4, 4]
    assert_one_slot_per_call(client)
    assert slots([keys[0] for _, keys in client.calls]) == slots([queue.queue_key(shard)])


def test_the_usage_queue_shards_have_slots_of_their_own():
    """Shard 0 keeps the tag from before shards; the others each hash elsewhere."""
    assert queue.queue_key(0) == redis_key("{usage}", "queue")
    assert len(slots([queue.queue_key(shard) for shard in queue.drained_shards()])) == len(queue.drained_shards())


async def test_the_breaker_step_declares_its_hash(monkeypatch):
    state = ["closed", "0", "0", "0", "0", "0", "0", ""]
    client = AsyncRecordingClient(reply=[*state, *state, "1", "0", "0"])
    monkeypatch.setattr(breaker_redis, "get_async_redis", lambda: client)
    monkeypatch.setattr(breaker_redis, "_scripts", {})
    await RedisBreakerBackend("device:9", expire_seconds=60).reset(1_800_000_000.0)
    assert client.calls == [("script", [redis_key("breaker", "device:9")])]


def test_a_key_s_in_flight_reports_are_read_from_one_slot():
    client = RecordingClient(reply=[b"1", None], members=(b"host-a:1:aa", b"host-b:2:bb"))
    assert keypool_shared.redis._sum_reports(client, 12) == 1
    assert_one_slot_per_call(client)


def test_a_device_s_snapshot_and_generation_share_a_slot():
    """The conditional store reads the generation and writes the snapshot in one script."""
    assert len(slots([device_state._snapshot_key("laptop-1"), device_state._generation_key("laptop-1")])) == 1
    assert device_state._snapshot_key("laptop-1") != device_state._snapshot_key("laptop-2")
