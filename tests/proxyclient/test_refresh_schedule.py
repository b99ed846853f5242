"""The refresh service's timing, driven by an injected clock: checks every 30 minutes, refreshes
when less than an hour remains, backs off exponentially with jitter after failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxyclient import AsyncRefreshService, GatewayUnreachable, ProxyConfig, RefreshSchedule, RefreshService
from proxyclient.errors import EnrollmentRateLimited

HOUR = 3600.0
DAY = 24 * HOUR
CONFIG = ProxyConfig(app_version="1.0", state_dir=Path("/nonexistent"), use_keyring=False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """The two calls the service makes, with a 24-hour token that is renewed when due; `failures`
    makes the next renewals raise as when the gateway is down."""

    def __init__(self, clock: FakeClock, failures: list[Exception] | None = None) -> None:
        self.config = CONFIG
        self.clock = clock
        self.expires_at = clock() + DAY
        self.failures = failures or []
        self.renewed_at: list[float] = []
        self.attempted_at: list[float] = []

    def refresh_due_in(self) -> float:
        return self.expires_at - self.clock() - HOUR

    def renew_if_due(self) -> None:
        if self.refresh_due_in() > 0:
            return
        self.attempted_at.append(self.clock())
        if self.failures:
            raise self.failures.pop(0)
        self.renewed_at.append(self.clock())
        self.expires_at = self.clock() + DAY


class FakeWait:
    """Moves the clock instead of sleeping; says "stop" once the clock passes `until`."""

    def __init__(self, clock: FakeClock, until: float) -> None:
        self.clock = clock
        self.until = until
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        self.clock.now += seconds
        return self.clock.now > self.until


def test_checks_every_thirty_minutes_and_refreshes_when_an_hour_remains():
    clock = FakeClock()
    start = clock()
    session = FakeSession(clock)
    wait = FakeWait(clock, until=start + 2 * DAY)
    RefreshService(session, schedule=RefreshSchedule(CONFIG, random=lambda: 0.5), wait=wait).run()
    assert session.renewed_at == [start + 23 * HOUR, start + 46 * HOUR]
    assert set(wait.delays) == {1800.0}
    assert len(wait.delays) == 2 * 48 + 1


def test_failures_back_off_exponentially_with_jitter_then_resume_the_schedule():
    clock = FakeClock()
    start = clock()
    down = [GatewayUnreachable("down") for _ in range(4)]
    session = FakeSession(clock, failures=down)
    wait = FakeWait(clock, until=start + 23 * HOUR + 60)
    RefreshService(session, schedule=RefreshSchedule(CONFIG, random=lambda: 0.0), wait=wait).run()
    due = start + 23 * HOUR
    assert session.attempted_at == [due, due + 2.5, due + 7.5, due + 17.5, due + 37.5]
    assert session.renewed_at == [due + 37.5]
    assert wait.delays[46:] == [2.5, 5.0, 10.0, 20.0, 1800.0]


def test_backoff_jitter_stays_between_half_and_all_of_the_ceiling_and_caps():
    schedule = RefreshSchedule(CONFIG, random=lambda: 1.0)
    delays = []
    for _ in range(8):
        schedule.record_failure(None)
        delays.append(schedule.next_delay(due_in=0.0))
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    schedule.random = lambda: 0.0
    assert schedule.next_delay(due_in=0.0) == 150.0


def test_gateway_retry_after_is_honoured():
    schedule = RefreshSchedule(CONFIG, random=lambda: 0.0)
    schedule.record_failure(retry_after=42.0)
    assert schedule.next_delay(due_in=0.0) == 42.0
    schedule.record_success()
    assert schedule.next_delay(due_in=5000.0) == 1800.0


def test_short_lived_token_is_looked_at_when_its_refresh_falls_due():
    schedule = RefreshSchedule(CONFIG)
    assert schedule.next_delay(due_in=90.0) == 90.0
    assert schedule.next_delay(due_in=-5.0) == 0.0
    assert schedule.next_delay(due_in=None) == 0.0


def test_refusal_carrying_retry_after_is_scheduled_after_it():
    clock = FakeClock()
    start = clock()
    limited = EnrollmentRateLimited("slow down", status=429, error_code="enrollment_rate_limited", retry_after=120.0)
    session = FakeSession(clock, failures=[limited])
    wait = FakeWait(clock, until=start + 23 * HOUR + 600)
    RefreshService(session, schedule=RefreshSchedule(CONFIG, random=lambda: 0.0), wait=wait).run()
    assert session.renewed_at == [start + 23 * HOUR + 120.0]


def test_a_bug_in_renewal_does_not_kill_the_service():
    clock = FakeClock()
    start = clock()
    session = FakeSession(clock, failures=[KeyError("bug")])
    wait = FakeWait(clock, until=start + 23 * HOUR + 60)
    RefreshService(session, schedule=RefreshSchedule(CONFIG, random=lambda: 0.0), wait=wait).run()
    assert session.renewed_at == [start + 23 * HOUR + 2.5]


def test_thread_stops_promptly_while_waiting():
    session = FakeSession(FakeClock())
    service = RefreshService(session)
    service.start()
    assert service.running is True
    began = time.monotonic()
    service.stop(timeout=5)
    assert service.running is False
    assert time.monotonic() - began < 1.0


async def test_asyncio_task_follows_the_same_schedule():
    clock = FakeClock()
    start = clock()
    session = FakeSession(clock, failures=[GatewayUnreachable("down")])
    fake_wait = FakeWait(clock, until=start + 23 * HOUR + 60)

    async def wait(seconds: float) -> bool:
        return fake_wait(seconds)

    await AsyncRefreshService(session, schedule=RefreshSchedule(CONFIG, random=lambda: 0.0), wait=wait).run()
    assert session.renewed_at == [start + 23 * HOUR + 2.5]


async def test_asyncio_task_stops_promptly():
    service = AsyncRefreshService(FakeSession(FakeClock()))
    service.start()
    await asyncio.sleep(0)
    assert service.running is True
    await asyncio.wait_for(service.stop(), timeout=1.0)
    assert service.running is False
