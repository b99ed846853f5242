"""Nothing shared (the embedded default): one process, which knows its own changes at once
(`gateway.keypool_shared.local_pool_version`) and cannot know what other processes have in flight."""

from __future__ import annotations

from collections.abc import Iterable


class LocalPoolSharing:
    def announce_change(self) -> None:
        """No other process to tell."""

    async def read_version(self) -> bytes | None:
        return None

    def count_in_flight(self, key_id: int, delta: int) -> None:
        """Nobody reads it: this process's counts per key name are the pool's own."""

    def start_reporting(self) -> None:
        """Nobody to report to."""

    async def report_in_flight(self) -> None:
        """Nobody to report to."""

    def in_flight_counts(self, key_ids: Iterable[int]) -> dict[int, int] | None:
        return None
