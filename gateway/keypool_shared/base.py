"""The interface of what gateway processes share about the upstream key pool."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class PoolSharing(Protocol):
    def announce_change(self) -> None:
        """Tell every other process that the keys changed (this one knows already)."""

    async def read_version(self) -> bytes | None:
        """The shared version; None when nothing is shared or it cannot be read (the pool then
        reads the database)."""

    def count_in_flight(self, key_id: int, delta: int) -> None:
        """A request started (+1) or ended (-1) on the key in this process."""

    def start_reporting(self) -> None:
        """Make sure this loop's in-flight counts reach the other processes."""

    async def report_in_flight(self) -> None:
        """Share this process's in-flight counts now."""

    def in_flight_counts(self, key_ids: Iterable[int]) -> dict[int, int] | None:
        """Requests in flight on each key across every process; None when nobody can tell."""
