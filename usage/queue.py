"""Usage records on their way to the database: the wire format, and the Redis queue (when REDIS_URL
is set) that every gateway process pushes to and any writer drains.

The queue is split in shards (`USAGE_QUEUE_SHARDS`), each a list under a hash tag of its own; a
process pushes to one shard, and writers drain all of them. In a shard, a writer claims a batch by
moving it, in one script, from the shard's list to its own processing list there and refreshing its
lease; it deletes that list only after the batch is committed. A writer that dies leaves its list
behind with an expired lease, and the next writer to look returns it to that shard's queue. Replays
are harmless because records are inserted idempotently by request id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import secrets
import socket
from typing import Any

import orjson
from django.conf import settings

from proxyproject.lib.redis import SyncRedis, redis_key, slot_tag
from usage.counts import COUNT_FIELDS
from usage.events import UsageEvent

_EVENT_FIELDS = {f.name for f in dataclasses.fields(UsageEvent)}
_COUNTED_FIELDS = frozenset({*COUNT_FIELDS, "status"})
MAX_COUNT = 2_147_483_647  # a record's count columns are 32-bit

CLAIM_SCRIPT = """
-- KEYS: queue, processing list, lease, writers set. ARGV: batch size, lease ms, writer id.
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local held = redis.call('LRANGE', KEYS[2], 0, -1)
if #held > 0 then
  return held
end
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #items == 0 then
  return items
end
redis.call('LTRIM', KEYS[1], #items, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
return items
"""

RECOVER_SCRIPT = """
-- KEYS: queue, writers set, the other writer's processing list and lease. ARGV: that writer's id.
-- Its batch returns to the queue only if its lease is still gone when the script runs.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
local items = redis.call('LRANGE', KEYS[3], 0, -1)
for i = 1, #items, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
return #items
"""


RETURN_SCRIPT = """
-- KEYS: queue, this writer's processing list.
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[2])
return #items
"""


ADOPT_SCRIPT = """
-- KEYS: queue, a list of records kept under a name from before the hash tags. Moves them all.
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[2])
return #items
"""


@dataclasses.dataclass(frozen=True, slots=True)
class StreamCheckpoint:
    """A stream's usage so far, queued while it is relayed (`usage.models.OpenStream`)."""

    request_id: str
    owner: str
    sequence: int
    event: bytes  # the encoded usage event so far


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerHeartbeat:
    """A gateway process that relays checkpointed streams is alive."""

    owner: str


QueuedItem = UsageEvent | StreamCheckpoint | OwnerHeartbeat


def _event_fields(event: UsageEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


def encode_event(event: UsageEvent) -> bytes:
    return orjson.dumps(_event_fields(event), default=str)


def encode_checkpoint(event: UsageEvent, owner: str, sequence: int) -> bytes:
    """The event is nested, so a writer that predates checkpoints rejects the payload (it lacks
    `occurred_at`) rather than storing a stream's partial usage as its final record."""
    return orjson.dumps({"checkpoint": {"owner": owner, "sequence": sequence}, "event": _event_fields(event)}, default=str)


def encode_heartbeat(owner: str) -> bytes:
    return orjson.dumps({"heartbeat": owner})


def wire_count(value: object) -> int:
    """A count or status as a queued record gave it. A record may come from an older or a foreign
    writer: a number (text included) counts as itself up to what a record's column holds, negatives
    and anything else as zero, so that pricing and storing never meet a count they cannot take."""
    if isinstance(value, int):
        count = int(value)  # a bool as the int it stands for: a column's values must be one type
    else:
        try:
            count = int(value or 0)  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError):
            return 0
    return min(max(count, 0), MAX_COUNT)


def wire_milliseconds(value: object) -> float | None:
    """A latency as a queued record gave it: a finite, non-negative number, else none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(float(value), 0.0)


def _event_from(data: dict[str, Any]) -> UsageEvent:
    """Fields this version does not know (a newer gateway's) are dropped rather than failing the batch."""
    fields = {name: value for name, value in data.items() if name in _EVENT_FIELDS}
    for name in _COUNTED_FIELDS.intersection(fields):
        fields[name] = wire_count(fields[name])
    if "latency_ms" in fields:
        fields["latency_ms"] = wire_milliseconds(fields["latency_ms"]) or 0.0
    if "ttfb_ms" in fields:
        fields["ttfb_ms"] = wire_milliseconds(fields["ttfb_ms"])
    fields["occurred_at"] = dt.datetime.fromisoformat(fields["occurred_at"])
    if fields.get("priced_at") is not None:
        fields["priced_at"] = dt.datetime.fromisoformat(fields["priced_at"])
    return UsageEvent(**fields)


def decode_event(payload: bytes | str) -> UsageEvent:
    return _event_from(orjson.loads(payload))


def decode_item(payload: bytes | str) -> QueuedItem:
    """A final usage record, a stream checkpoint or a heartbeat, as the payload says."""
    data: dict[str, Any] = orjson.loads(payload)
    if "checkpoint" in data:
        marker, event = data["checkpoint"], data["event"]
        return StreamCheckpoint(
            request_id=str(event["request_id"]),
            owner=str(marker["owner"]),
            sequence=int(marker["sequence"]),
            event=orjson.dumps(event),
        )
    if "heartbeat" in data:
        return OwnerHeartbeat(owner=str(data["heartbeat"]))
    return _event_from(data)


# The queue is USAGE_QUEUE_SHARDS lists. Every key of one shard (its queue, the writers' processing
# lists and leases, the writers set) carries that shard's hash tag: a claim moves records from the
# shard's queue to a writer's list in one script, so on a Redis Cluster they share one slot, and the
# shards' slots spread the usage traffic over the masters.


def shard_tag(shard: int) -> str:
    """Shard 0 keeps the tag of the queue from before shards, so a single Redis with one shard, and
    the records the previous release queued, see no change."""
    return slot_tag("usage") if shard == 0 else slot_tag("usage", shard)


def drained_shards() -> range:
    """Every shard a writer drains: all that any allowed USAGE_QUEUE_SHARDS pushes to, not only
    today's, so the records pushed before the count was lowered (or by processes not yet restarted
    with the lower count) are still written."""
    return range(settings.USAGE_QUEUE_MAX_SHARDS)


def queue_key(shard: int) -> str:
    return redis_key(shard_tag(shard), "queue")


def writers_key(shard: int) -> str:
    return redis_key(shard_tag(shard), "writers")


def processing_key(shard: int, writer: str) -> str:
    return redis_key(shard_tag(shard), "processing", writer)


def lease_key(shard: int, writer: str) -> str:
    return redis_key(shard_tag(shard), "lease", writer)


class _ProcessIdentity:
    """Who this process is to the queue, drawn again in a forked child: its writer id, unique per
    process so two processes never share a processing list, and a random draw that picks its shard."""

    def __init__(self) -> None:
        self.pid = -1
        self.writer = ""
        self.draw = 0

    def current(self) -> _ProcessIdentity:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.writer = f"{socket.gethostname()}-{self.pid}-{secrets.token_hex(4)}"
            self.draw = secrets.randbelow(1 << 32)
        return self


_identity = _ProcessIdentity()


def writer_id() -> str:
    return _identity.current().writer


def push_shard() -> int:
    """The shard this process pushes to, the same for its whole life: a stream's checkpoints, its
    final record and its owner's heartbeats then travel in one list, in the order they were queued."""
    return _identity.current().draw % settings.USAGE_QUEUE_SHARDS


def push_key() -> str:
    return queue_key(push_shard())


def claim_batch(client: SyncRedis, shard: int, size: int) -> list[bytes]:
    """This writer's unacknowledged batch in the shard if it has one, else up to `size` records from
    the shard's queue."""
    me = writer_id()
    lease_ms = int(settings.USAGE_WRITER_LEASE_SECONDS * 1000)
    keys = [queue_key(shard), processing_key(shard, me), lease_key(shard, me), writers_key(shard)]
    batch: list[bytes] = client.eval(CLAIM_SCRIPT, len(keys), *keys, size, lease_ms, me)
    return batch


def acknowledge_batch(client: SyncRedis, shard: int) -> None:
    client.delete(processing_key(shard, writer_id()))


def return_batch(client: SyncRedis, shard: int) -> int:
    """Give this writer's unacknowledged batch back to the shard's queue (its write failed), so no
    other writer has to wait for this one's lease to run out."""
    return int(client.eval(RETURN_SCRIPT, 2, queue_key(shard), processing_key(shard, writer_id())))


@dataclasses.dataclass(frozen=True, slots=True)
class ShardState:
    shard: int
    queued: int
    held: int  # records of this writer's unacknowledged batch there
    writers: frozenset[str]  # every writer that has claimed there since it was last recovered


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


def survey_shards(client: SyncRedis) -> list[ShardState]:
    """Every drained shard's state in one pipeline: one round trip on a single Redis, one per node on
    a cluster, however many shards, so an idle writer's pass costs little."""
    me = writer_id()
    pipe = client.pipeline(transaction=False)
    for shard in drained_shards():
        pipe.llen(queue_key(shard))
        pipe.llen(processing_key(shard, me))
        pipe.smembers(writers_key(shard))
    replies = pipe.execute()
    return [
        ShardState(shard, int(replies[3 * index]), int(replies[3 * index + 1]), frozenset(map(_text, replies[3 * index + 2])))
        for index, shard in enumerate(drained_shards())
    ]


def recover_abandoned_batches(client: SyncRedis, shards: list[ShardState]) -> dict[int, int]:
    """Return the batches of writers whose lease on a shard expired (they died) to that shard's queue:
    one script per writer and shard, each declaring that writer's keys, all in one pipeline. Answers
    the records recovered per shard."""
    me = writer_id()
    others = [(state.shard, writer) for state in shards for writer in sorted(state.writers) if writer != me]
    if not others:
        return {}
    pipe = client.pipeline(transaction=False)
    for shard, writer in others:
        keys = [queue_key(shard), writers_key(shard), processing_key(shard, writer), lease_key(shard, writer)]
        pipe.execute_command("EVAL", RECOVER_SCRIPT, len(keys), *keys, writer)  # a cluster pipeline has no eval()
    recovered: dict[int, int] = {}
    for (shard, _), count in zip(others, pipe.execute(), strict=True):
        recovered[shard] = recovered.get(shard, 0) + int(count)
    return recovered


def shards_with_records(client: SyncRedis) -> dict[int, int]:
    """The shards this writer has records to store from now, each with how many are waiting there
    (queued, recovered, or its own batch not yet acknowledged), starting at its own draw: writers
    that start together start at different shards."""
    shards = survey_shards(client)
    recovered = recover_abandoned_batches(client, shards)
    start = _identity.current().draw % len(shards)
    waiting = {state.shard: state.queued + state.held + recovered.get(state.shard, 0) for state in shards}
    return {shard: waiting[shard] for shard in sorted(waiting, key=lambda shard: (shard - start) % len(shards)) if waiting[shard]}


def adopt_pre_cluster_queue(client: SyncRedis) -> int:
    """On a single Redis, move the records that gateways of the release before hash tags queue under
    the untagged names (`<prefix>:usage:queue`, and the batches of its writers that died) into shard
    0, so none is stranded by a rolling upgrade. Only a single Redis can hold those names together
    with the new ones in one script; a cluster never had them."""
    adopted = int(client.eval(ADOPT_SCRIPT, 2, queue_key(0), redis_key("usage", "queue")))
    for member in client.smembers(redis_key("usage", "writers")):
        writer = _text(member)
        if not client.exists(redis_key("usage", "lease", writer)):
            adopted += int(client.eval(ADOPT_SCRIPT, 2, queue_key(0), redis_key("usage", "processing", writer)))
            client.srem(redis_key("usage", "writers"), writer)
    return adopted


def queued_count(client: SyncRedis) -> int:
    """Records waiting in every drained shard's queue, counted in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for shard in drained_shards():
        pipe.llen(queue_key(shard))
    return sum(int(length) for length in pipe.execute())
