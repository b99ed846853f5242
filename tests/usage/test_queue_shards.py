"""The Redis usage queue in shards (`USAGE_QUEUE_SHARDS`): each process pushes to one, writers drain
every shard up to USAGE_QUEUE_MAX_SHARDS, a dead writer's batch returns to its own shard, and on a
Redis Cluster the shards live on more than one master."""

from __future__ import annotations

import time

import pytest
from redis.crc import key_slot

from proxyproject.lib.redis import cluster_configured, get_sync_redis
from tests.usage.cast import usage_event
from tests.usage.test_writer import stored_ids, usage_process
from usage import queue, writer
from usage.writer import drain_usage_queue, submit_usage

pytestmark = [pytest.mark.usefixtures("live_prices", "redis_required")]


def submit_from_shard(monkeypatch: pytest.MonkeyPatch, shard: int, request_ids: list[str]) -> None:
    """Submit as a process whose draw picked `shard` does."""
    monkeypatch.setattr(queue, "push_shard", lambda: shard)
    for request_id in request_ids:
        submit_usage(usage_event(request_id=request_id))
    monkeypatch.undo()


def queued_per_shard() -> dict[int, int]:
    return {state.shard: state.queued for state in queue.survey_shards(get_sync_redis()) if state.queued}


def test_a_process_pushes_to_one_shard_within_the_configured_count(settings):
    settings.USAGE_QUEUE_SHARDS = 4
    shard = queue.push_shard()
    assert shard in range(4)
    for index in range(5):
        submit_usage(usage_event(request_id=f"req_one_shard_{index}"))
    assert queue.push_shard() == shard
    assert queued_per_shard() == {shard: 5}


def test_records_pushed_to_several_shards_are_all_written_exactly_once(settings, monkeypatch):
    settings.USAGE_QUEUE_SHARDS = 4
    settings.USAGE_BATCH_SIZE = 2
    expected = []
    for shard, count in ((0, 3), (1, 5), (3, 4)):
        ids = [f"req_shard{shard}_{index}" for index in range(count)]
        submit_from_shard(monkeypatch, shard, ids)
        expected += ids
    assert queued_per_shard() == {0: 3, 1: 5, 3: 4}
    assert queue.queued_count(get_sync_redis()) == 12
    assert drain_usage_queue() == 12
    assert stored_ids() == sorted(expected)
    assert queue.queued_count(get_sync_redis()) == 0
    assert drain_usage_queue() == 0


def test_a_writer_drains_the_shards_in_turn(settings, monkeypatch):
    """One batch from each shard before a second from any: a backlog in one shard waits no other."""
    settings.USAGE_QUEUE_SHARDS = 3
    settings.USAGE_BATCH_SIZE = 2
    submit_from_shard(monkeypatch, 0, [f"req_turn_a_{index}" for index in range(6)])
    submit_from_shard(monkeypatch, 2, ["req_turn_b_0", "req_turn_b_1"])
    claimed: list[int] = []
    claim = queue.claim_batch

    def recording_claim(client, shard: int, size: int) -> list[bytes]:
        batch = claim(client, shard, size)
        if batch:
            claimed.append(shard)
        return batch

    monkeypatch.setattr(queue, "claim_batch", recording_claim)
    assert drain_usage_queue() == 8
    assert sorted(claimed[:2]) == [0, 2] and claimed[2:] == [0, 0]


def arrivals_while_storing(monkeypatch: pytest.MonkeyPatch, per_store: int, stores: int) -> list[int]:
    """`per_store` new records queued while each of the first `stores` batches is stored, as steady
    traffic queues them during a drain; answers the sizes of the batches stored."""
    store = writer.store_payloads
    sizes: list[int] = []

    def storing_with_arrivals(payloads: list[bytes]) -> list:
        sizes.append(len(payloads))
        if len(sizes) <= stores:
            for index in range(per_store):
                submit_usage(usage_event(request_id=f"req_arrived_{len(sizes)}_{index}"))
        return store(payloads)

    monkeypatch.setattr(writer, "store_payloads", storing_with_arrivals)
    return sizes


def test_a_drain_stores_what_was_waiting_and_leaves_what_arrives_meanwhile_to_the_next(settings, monkeypatch):
    """Chasing each record that arrived while the last batch was stored, a writer under steady light
    traffic stored batches of a few records each, every one paying a claim, an acknowledgement and a
    transaction: the writer and PostgreSQL spent about 300 µs of CPU per record."""
    settings.USAGE_QUEUE_SHARDS = 1
    for index in range(3):
        submit_usage(usage_event(request_id=f"req_waiting_{index}"))
    sizes = arrivals_while_storing(monkeypatch, per_store=1, stores=5)

    assert drain_usage_queue() == 3
    assert sizes == [3]
    assert queue.queued_count(get_sync_redis()) == 1
    assert drain_usage_queue() == 1  # the next drain takes it, and what arrived during it waits again
    assert queue.queued_count(get_sync_redis()) == 1


def test_a_drain_keeps_on_while_batches_come_back_full(settings, monkeypatch):
    """A backlog (batches full) is drained without waiting for the next tick."""
    settings.USAGE_QUEUE_SHARDS = 1
    settings.USAGE_BATCH_SIZE = 2
    for index in range(4):
        submit_usage(usage_event(request_id=f"req_backlog_{index}"))
    sizes = arrivals_while_storing(monkeypatch, per_store=2, stores=3)

    assert drain_usage_queue() == 10
    assert sizes == [2, 2, 2, 2, 2]
    assert queue.queued_count(get_sync_redis()) == 0


def test_a_writer_killed_mid_batch_on_a_shard_has_its_batch_recovered(settings, monkeypatch):
    settings.USAGE_QUEUE_SHARDS = 4
    submit_from_shard(monkeypatch, 3, [f"req_shard_kill-{index:04d}" for index in range(12)])
    process = usage_process(
        "drain-and-hang", 0, "unused", settings, USAGE_QUEUE_SHARDS="4", USAGE_BATCH_SIZE="5", USAGE_WRITER_LEASE_SECONDS="0.5"
    )
    try:
        line = process.stdout.readline()
        assert line.split() == ["committed", "5"], process.stderr.read() if not line else line
        process.kill()
        process.wait(timeout=10)
    finally:
        process.kill()
    client = get_sync_redis()
    [dead_writer] = [w for w in queue.survey_shards(client)[3].writers if w != queue.writer_id()]
    assert client.llen(queue.processing_key(3, dead_writer)) == 5
    deadline = time.monotonic() + 10
    while client.exists(queue.processing_key(3, dead_writer)) and time.monotonic() < deadline:
        drain_usage_queue()  # the dead writer's batch returns to shard 3 once its lease (0.5 s) runs out
        time.sleep(0.05)
    assert client.exists(queue.processing_key(3, dead_writer)) == 0
    assert dead_writer not in queue.survey_shards(client)[3].writers
    assert stored_ids() == [f"req_shard_kill-{index:04d}" for index in range(12)]
    assert queue.queued_count(client) == 0


def test_lowering_the_shard_count_strands_no_record(settings, monkeypatch):
    settings.USAGE_QUEUE_SHARDS = 16
    submit_from_shard(monkeypatch, 9, ["req_retired_9"])
    submit_from_shard(monkeypatch, 15, ["req_retired_15"])
    client = get_sync_redis()
    client.rpush(queue.processing_key(12, "writer-of-the-old-count"), queue.encode_event(usage_event(request_id="req_held_12")))
    client.sadd(queue.writers_key(12), "writer-of-the-old-count")  # its lease is gone: it died
    settings.USAGE_QUEUE_SHARDS = 2
    assert queue.push_shard() in (0, 1)
    assert drain_usage_queue() == 3
    assert stored_ids() == ["req_held_12", "req_retired_15", "req_retired_9"]
    assert queue.queued_count(client) == 0


def test_on_a_cluster_the_shards_land_on_more_than_one_master(settings):
    if not cluster_configured():
        pytest.skip("needs a Redis Cluster (CI's third pass)")
    assert settings.USAGE_QUEUE_SHARDS == 16  # the default on a cluster
    client = get_sync_redis()
    masters = {(low, high): f"{node['primary'][0]}:{node['primary'][1]}" for (low, high), node in client.cluster_slots().items()}

    def master_of(key: str) -> str:
        slot = client.cluster_keyslot(key)
        assert slot == key_slot(key.encode())
        [master] = [name for (low, high), name in masters.items() if low <= slot <= high]
        return master

    holders = {master_of(queue.queue_key(shard)) for shard in range(settings.USAGE_QUEUE_SHARDS)}
    assert holders == set(masters.values())  # 16 tags over CI's 3 masters: each holds some
