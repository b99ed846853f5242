"""Message Batches, enough to round-trip one: create, poll until ended, fetch results, cancel, delete.

A batch stays `in_progress` until the first read at least `processing_seconds` after creation
(0: the next read), then ends with every request succeeded (or canceled, if a cancel came
first). Results carry usage with `service_tier: batch`, the way the API bills them; an
`x-fake-usage` header on the create call sets the usage of every result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .errors import FakeApiError, invalid_request, not_found
from .ids import new_id
from .messages import check_messages_request, message_object, plan_reply
from .usage import PromptCache, apply_usage_override, build_usage, split_prompt_tokens

BATCH_LIFETIME = timedelta(hours=24)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Batch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]  # (custom_id, params)
    created_at: datetime
    ready_at: float  # monotonic time from which a read ends it
    usage_override: dict[str, Any] | None
    processing_status: str = "in_progress"
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def request_counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.processing_status != "ended":
            counts["processing"] = len(self.requests)
        for line in self.results:
            counts[line["result"]["type"]] += 1
        return counts

    def as_json(self, base_url: str) -> dict[str, Any]:
        ended = self.processing_status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.request_counts(),
            "ended_at": rfc3339(self.ended_at) if self.ended_at else None,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + BATCH_LIFETIME),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at) if self.cancel_initiated_at else None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def parse_batch_requests(body: Any) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
        raise invalid_request("requests: Field required (a non-empty list)")
    parsed: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(body["requests"]):
        location = f"requests.{index}"
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            raise invalid_request(f"{location}.custom_id: Field required")
        custom_id = item["custom_id"]
        if custom_id in seen:
            raise invalid_request(f"{location}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        check_messages_request(item.get("params"), location=f"{location}.params.")
        parsed.append((custom_id, item["params"]))
    return parsed


class BatchStore:
    """Batches of one fake, kept in memory; used only from the event-loop thread."""

    def __init__(self, *, prompt_cache: PromptCache, processing_seconds: float = 0.0) -> None:
        self._batches: dict[str, Batch] = {}
        self._prompt_cache = prompt_cache
        self.processing_seconds = processing_seconds

    def create(self, body: Any, usage_override: dict[str, Any] | None) -> Batch:
        batch = Batch(
            id=new_id("msgbatch_01"),
            requests=parse_batch_requests(body),
            created_at=datetime.now(UTC),
            ready_at=time.monotonic() + self.processing_seconds,
            usage_override=usage_override,
        )
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch:
        """The batch, ended first if its time has come (reads are what move a batch along)."""
        batch = self._find(batch_id)
        self._advance(batch)
        return batch

    def _find(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(f"message_batch {batch_id} not found")
        return batch

    def newest_first(self) -> list[Batch]:
        batches = list(reversed(self._batches.values()))
        for batch in batches:
            self._advance(batch)
        return batches

    def cancel(self, batch_id: str) -> Batch:
        batch = self._find(batch_id)
        if batch.processing_status == "in_progress":
            batch.processing_status = "canceling"
            batch.cancel_initiated_at = datetime.now(UTC)
        return batch

    def delete(self, batch_id: str) -> dict[str, str]:
        batch = self.get(batch_id)
        if batch.processing_status != "ended":
            raise invalid_request(f"Batch {batch_id} cannot be deleted while it is processing; cancel it first")
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results_jsonl(self, batch_id: str) -> bytes:
        batch = self.get(batch_id)
        if batch.processing_status != "ended":
            raise FakeApiError(400, f"Batch {batch_id} has not finished processing")
        return b"".join(orjson.dumps(line) + b"\n" for line in batch.results)

    def _advance(self, batch: Batch) -> None:
        if batch.processing_status == "ended" or time.monotonic() < batch.ready_at:
            return
        canceled = batch.processing_status == "canceling"
        batch.results = [
            {"custom_id": custom_id, "result": {"type": "canceled"} if canceled else self._succeeded(params, batch)}
            for custom_id, params in batch.requests
        ]
        batch.processing_status = "ended"
        batch.ended_at = datetime.now(UTC)

    def _succeeded(self, params: dict[str, Any], batch: Batch) -> dict[str, Any]:
        reply = plan_reply(params)
        usage = build_usage(split_prompt_tokens(params, self._prompt_cache), reply.output_tokens, service_tier="batch")
        if batch.usage_override is not None:
            usage = apply_usage_override(usage, batch.usage_override)
        return {"type": "succeeded", "message": message_object(reply, usage)}
