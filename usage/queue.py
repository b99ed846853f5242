"""Usage records on their way to the database: the wire format, and the Redis queue (when REDIS_URL
is set) that every gateway process pushes to and any writer drains.

A writer claims a batch by moving it, in one script, from the shared list to its own processing
list and refreshing its lease; it deletes that list only after the batch is committed. A writer that
dies leaves its list behind with an expired lease, and the next writer to look returns it to the
queue. Replays are harmless because records are inserted idempotently by request id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import socket
from typing import Any

import orjson
from django.conf import settings

from proxyproject.lib.redis import SyncRedis, redis_key, slot_tag
from usage.events import UsageEvent

_EVENT_FIELDS = {f.name for f in dataclasses.fields(UsageEvent)}

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


def _event_from(data: dict[str, Any]) -> UsageEvent:
    """Fields this version does not know (a newer gateway's) are dropped rather than failing the batch."""
    fields = {name: value for name, value in data.items() if name in _EVENT_FIELDS}
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


# Every key of the queue carries one hash tag: a claim moves records from the queue to a writer's
# list in one script, so on a Redis Cluster they all live in one slot (the queue is one node's load).
_QUEUE_TAG = slot_tag("usage")


def queue_key() -> str:
    return redis_key(_QUEUE_TAG, "queue")


def writers_key() -> str:
    return redis_key(_QUEUE_TAG, "writers")


class _WriterIdentity:
    def __init__(self) -> None:
        self.pid = -1
        self.value = ""

    def get(self) -> str:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.value = f"{socket.gethostname()}-{self.pid}-{secrets.token_hex(4)}"
        return self.value


_identity = _WriterIdentity()


def writer_id() -> str:
    """Unique per process (and per fork), so two processes never share a processing list."""
    return _identity.get()


def processing_key(writer: str) -> str:
    return redis_key(_QUEUE_TAG, "processing", writer)


def lease_key(writer: str) -> str:
    return redis_key(_QUEUE_TAG, "lease", writer)


def claim_batch(client: SyncRedis, size: int) -> list[bytes]:
    """This writer's unacknowledged batch if it has one, else up to `size` records from the queue."""
    me = writer_id()
    lease_ms = int(settings.USAGE_WRITER_LEASE_SECONDS * 1000)
    keys = [queue_key(), processing_key(me), lease_key(me), writers_key()]
    batch: list[bytes] = client.eval(CLAIM_SCRIPT, len(keys), *keys, size, lease_ms, me)
    return batch


def acknowledge_batch(client: SyncRedis) -> None:
    client.delete(processing_key(writer_id()))


def return_batch(client: SyncRedis) -> int:
    """Give this writer's unacknowledged batch back to the queue (its write failed), so no other
    writer has to wait for this one's lease to run out."""
    return int(client.eval(RETURN_SCRIPT, 2, queue_key(), processing_key(writer_id())))


def recover_abandoned_batches(client: SyncRedis) -> int:
    """Return the batches of writers whose lease expired (they died) to the queue: one script per
    writer, each declaring that writer's keys."""
    recovered = 0
    for member in client.smembers(writers_key()):
        writer = member.decode() if isinstance(member, bytes) else member
        if writer != writer_id():
            keys = [queue_key(), writers_key(), processing_key(writer), lease_key(writer)]
            recovered += int(client.eval(RECOVER_SCRIPT, len(keys), *keys, writer))
    return recovered


def adopt_pre_cluster_queue(client: SyncRedis) -> int:
    """On a single Redis, move the records that gateways of the previous release queue under the
    untagged names (`<prefix>:usage:queue`, and the batches of its writers that died) into the queue,
    so none is stranded by a rolling upgrade. Only a single Redis can hold those names together with
    the new ones in one script; a cluster never had them."""
    adopted = int(client.eval(ADOPT_SCRIPT, 2, queue_key(), redis_key("usage", "queue")))
    for member in client.smembers(redis_key("usage", "writers")):
        writer = member.decode() if isinstance(member, bytes) else member
        if not client.exists(redis_key("usage", "lease", writer)):
            adopted += int(client.eval(ADOPT_SCRIPT, 2, queue_key(), redis_key("usage", "processing", writer)))
            client.srem(redis_key("usage", "writers"), writer)
    return adopted


def queued_count(client: SyncRedis) -> int:
    return int(client.llen(queue_key()))
