"""The seed's refresh service: looks at the token every 30 minutes, refreshes when less than an
hour remains (the session falls back to bootstrap when a refresh is refused), and after a failure
retries with exponential backoff and jitter. Silent: it logs, it never prints or raises into the
app. A thread for synchronous apps, an asyncio task for asyncio apps; both stop promptly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .config import ProxyConfig
from .errors import ProxyClientError
from .session import ProxySession

log = logging.getLogger("proxyclient")


@dataclass
class RefreshSchedule:
    """How long to wait before the next look. Plain arithmetic, so tests drive it with a fake clock."""

    config: ProxyConfig
    random: Callable[[], float] = random.random
    failures: int = 0
    retry_after: float | None = None

    def next_delay(self, due_in: float | None) -> float:
        """After failures: backoff doubling from `retry_initial` up to `retry_max`, jittered between
        half and all of it (a fleet that lost the gateway together does not return together), and
        never sooner than the gateway's retry-after. Otherwise: the check interval, or sooner when
        the refresh falls due before the next check (short-lived tokens, a laptop that slept)."""
        if self.failures:
            ceiling = min(self.config.retry_max, self.config.retry_initial * 2 ** (self.failures - 1))
            delay = ceiling / 2 + self.random() * ceiling / 2
            return max(delay, self.retry_after or 0.0)
        if due_in is None:
            return 0.0
        return min(self.config.check_interval, max(0.0, due_in))

    def record_success(self) -> None:
        self.failures = 0
        self.retry_after = None

    def record_failure(self, retry_after: float | None) -> None:
        self.failures += 1
        self.retry_after = retry_after


def check_once(session: ProxySession, schedule: RefreshSchedule) -> None:
    """One look at the token: renew it if due. Failures are logged and scheduled for a retry."""
    try:
        session.renew_if_due()
    except ProxyClientError as exc:
        schedule.record_failure(exc.retry_after)
        log.warning("proxyclient.refresh_service_retrying: attempt %d failed: %s", schedule.failures, exc)
    except Exception:  # a bug must not kill the only thing keeping the token alive
        schedule.record_failure(None)
        log.exception("proxyclient.refresh_service_error")
    else:
        schedule.record_success()


class RefreshService:
    """The background thread. `wait(seconds)` returns True when the service should stop; tests
    inject one that moves a fake clock instead of sleeping."""

    def __init__(
        self,
        session: ProxySession,
        *,
        schedule: RefreshSchedule | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.session = session
        self.schedule = schedule or RefreshSchedule(session.config)
        self._stopped = threading.Event()
        self._wait = wait or self._stopped.wait
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the refresh service is already running")
        self._thread = threading.Thread(target=self.run, name="proxyclient-refresh", daemon=True)
        self._thread.start()

    def run(self) -> None:
        while not self._wait(self.schedule.next_delay(self.session.refresh_due_in())):
            check_once(self.session, self.schedule)

    def stop(self, timeout: float | None = None) -> None:
        """Stops at the next wait; a renewal in flight finishes first (bounded by the HTTP timeout)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class AsyncRefreshService:
    """The same loop as an asyncio task; renewals run in a worker thread so the loop never blocks."""

    def __init__(
        self,
        session: ProxySession,
        *,
        schedule: RefreshSchedule | None = None,
        wait: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self.session = session
        self.schedule = schedule or RefreshSchedule(session.config)
        self._stopped = asyncio.Event()
        self._wait = wait or self._wait_for_stop
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the refresh service is already running")
        self._task = asyncio.get_running_loop().create_task(self.run(), name="proxyclient-refresh")

    async def run(self) -> None:
        while not await self._wait(self.schedule.next_delay(self.session.refresh_due_in())):
            await asyncio.to_thread(check_once, self.session, self.schedule)

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _wait_for_stop(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            return False
        return True
