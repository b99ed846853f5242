"""The usage of Message Batches, recorded as the client fetches the results.

A batch's tokens are billed when its requests run, and the only place their usage shows is the
results body (JSONL, one line per request). The relay passes that body through untouched, chunk by
chunk; this reader watches the same chunks, and each `succeeded` line becomes a usage record of its
own, priced at the batch rate and at the prices in force when the batch was created (not when its
results are fetched: the record's `occurred_at` is the fetch, its `priced_at` the creation); the reader also keeps those events, whose prices settle the batch's
spend reservation (`gateway.batch_spend`) once the whole body was read. The record's request id is
derived from the batch id and the line's `custom_id`, so fetching the results again stores nothing
new: the usage table is unique on request_id and the writer skips ids already stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Mapping

import orjson

from gateway.body import BATCHES_PATH
from gateway.usage_tally import UsageTally
from proxyproject.lib.logging import log_event
from usage.events import UsageEvent
from usage.writer import submit_usage

logger = logging.getLogger("gateway.batch_usage")

MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_REQUEST_ID_CHARS = 128  # UsageRecord.request_id
BATCH_SERVICE_TIER = "batch"
_RESULTS_PATH = re.compile(re.escape(BATCHES_PATH) + r"/([^/]+)/results/?")


def batch_id_of_results_path(path: str) -> str | None:
    """The batch id when `path` is a batch's results, else None."""
    match = _RESULTS_PATH.fullmatch(path)
    return match.group(1) if match else None


def batch_result_request_id(batch_id: str, custom_id: str) -> str:
    """The same id for the same result on every fetch; a digest when the pair is too long to store."""
    readable = f"batch_{batch_id}_{custom_id}"
    if len(readable) <= MAX_REQUEST_ID_CHARS:
        return readable
    return hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()


class BatchResultsReader:
    """Reads a results body from the chunks the relay passes on, however they split its lines."""

    def __init__(
        self,
        *,
        batch_id: str,
        request_event: UsageEvent,
        batch_created_at: dt.datetime | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.batch_id = batch_id
        self.request_event = request_event
        self.batch_created_at = batch_created_at
        self.max_line_bytes = max_line_bytes
        self.recorded = 0
        self.events: list[UsageEvent] = []  # every succeeded result's usage, recorded or not
        self.complete = False  # the body was read to its end
        self._line = bytearray()
        self._oversized = False  # inside a line past the cap: skipped up to its newline

    def feed(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._hold(chunk[start:end])
            self._end_line()
            start = end + 1
        self._hold(chunk[start:])

    def finish(self) -> None:
        """The body ended: a last line without its newline is still a line."""
        self._end_line()
        self.complete = True
        log_event(logger, "Batch result usage recorded", batchId=self.batch_id, records=self.recorded)

    def _hold(self, part: bytes) -> None:
        if self._oversized or not part:
            return
        if len(self._line) + len(part) > self.max_line_bytes:
            log_event(
                logger,
                "Batch result line over the size cap dropped",
                logging.WARNING,
                batchId=self.batch_id,
                capBytes=self.max_line_bytes,
            )
            self._line.clear()
            self._oversized = True
            return
        self._line += part

    def _end_line(self) -> None:
        if self._line and not self._oversized and not self._line.isspace():
            self._read_line(self._line)
        self._line.clear()
        self._oversized = False

    def _read_line(self, line: bytearray) -> None:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            log_event(logger, "Batch result line is not JSON", logging.WARNING, batchId=self.batch_id, bytes=len(line))
            return
        event = self._usage_of(parsed)
        if event is not None:
            self.events.append(event)
            self._submit(event)

    def _usage_of(self, line: object) -> UsageEvent | None:
        """The usage event of a succeeded result; None for any other line (errored, canceled,
        expired results are not billed)."""
        if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
            return None
        result = line.get("result")
        if not isinstance(result, Mapping) or result.get("type") != "succeeded":
            return None
        tally = UsageTally()
        tally.observe_message(result.get("message"))
        if not tally.seen:
            return None
        event = self._event_for(line["custom_id"])
        tally.apply_to(event)
        event.service_tier = BATCH_SERVICE_TIER
        event.upstream_request_id = tally.message_id
        return event

    def _event_for(self, custom_id: str) -> UsageEvent:
        fetched = self.request_event
        return UsageEvent(
            request_id=batch_result_request_id(self.batch_id, custom_id),
            occurred_at=fetched.occurred_at,
            endpoint=fetched.endpoint,
            method="GET",
            device_id=fetched.device_id,
            device_pk=fetched.device_pk,
            org_id=fetched.org_id,
            person_id=fetched.person_id,
            session_id=fetched.session_id,
            status=200,
            streamed=False,
            extra={"batch_id": self.batch_id, "custom_id": custom_id},
            priced_at=self.batch_created_at,
        )

    def _submit(self, event: UsageEvent) -> None:
        """A record that cannot be queued must not cut off the body the client is receiving."""
        try:
            submit_usage(event)
        except Exception:
            fields = {"batchId": self.batch_id, "requestId": event.request_id}
            logger.exception("Batch result usage not recorded", extra={"event_fields": fields})
            return
        self.recorded += 1


def batch_results_reader(
    *, method: str, path: str, status: int, request_event: UsageEvent | None, batch_created_at: dt.datetime | None = None
) -> BatchResultsReader | None:
    """A reader when the response is a batch's results, fetched by a known device; else None.
    `batch_created_at` None (a batch the gateway did not see created): priced at the fetch."""
    if method != "GET" or status != 200 or request_event is None:
        return None
    batch_id = batch_id_of_results_path(path)
    if batch_id is None:
        return None
    return BatchResultsReader(batch_id=batch_id, request_event=request_event, batch_created_at=batch_created_at)
