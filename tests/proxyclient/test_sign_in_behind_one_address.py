"""People signing in at the same time from behind one address (an office NAT), through a live
gateway with the default enrollment limit (ENROLLMENT_RATE_LIMIT_MAX=30 per minute per address):
polls are limited per sign-in, so ten people polling every second all get through, while polls of
made-up sign-ins from that address are limited before they reach the database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxyclient.session import ProxySession, SignInPrompt
from tests.oidc_provider import OIDCProvider
from tests.proxyclient.conftest import client_config, start_gateway
from tests.servers import ServerProcess
from tokens.models import Person

PEOPLE = 10
APPROVED_AFTER_WAITS = 4  # each person approves while their client waits for the fourth time
ENROLLMENT_LIMIT = 30


@pytest.fixture
def office(django_db_setup, transactional_db) -> Iterator[tuple[ServerProcess, OIDCProvider]]:
    provider = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    provider.interval = 1
    server = start_gateway(
        ENROLLMENT_MODE="oidc",
        ENROLLMENT_RATE_LIMIT_MAX=str(ENROLLMENT_LIMIT),
        ENROLLMENT_RATE_LIMIT_WINDOW="60000",
        PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX="5",
        REDIS_KEY_PREFIX=f"office-{uuid.uuid4().hex[:8]}",  # a limit of its own on a shared Redis
        PEOPLE_OIDC_ISSUER=provider.issuer,
        PEOPLE_OIDC_CLIENT_ID=provider.client_id,
        PEOPLE_OIDC_CLIENT_SECRET=provider.client_secret,
    )
    yield server, provider
    server.stop()
    provider.stop()


class Colleague:
    """One person at their laptop: the proxyclient session signs them in; they approve at the
    provider once their client has waited a few times."""

    provider_lock = threading.Lock()  # one approval at a time: each sets the provider's current person

    def __init__(self, number: int, gateway: ServerProcess, provider: OIDCProvider, home: Path) -> None:
        self.number, self.provider = number, provider
        self.user_code = ""
        self.waits: list[float] = []
        self.error: BaseException | None = None
        self.session = ProxySession(client_config(gateway.url, home), sleep=self.wait)

    def present(self, prompt: SignInPrompt) -> None:
        self.user_code = prompt.user_code

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) == APPROVED_AFTER_WAITS:
            with self.provider_lock:
                self.provider.person = {
                    **self.provider.person,
                    "sub": f"person-{self.number}",
                    "email": f"p{self.number}@example.com",
                }
                self.provider.approve(self.user_code)
        time.sleep(seconds)

    def sign_in(self) -> None:
        try:
            self.session.sign_in(self.present)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.session.close()


def test_ten_people_behind_one_address_sign_in_at_once(office, tmp_path):
    gateway, provider = office
    colleagues = [Colleague(n, gateway, provider, tmp_path / f"home-{n}") for n in range(PEOPLE)]
    threads = [threading.Thread(target=colleague.sign_in) for colleague in colleagues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [colleague.error for colleague in colleagues] == [None] * PEOPLE
    # Every wait was the provider's interval, never a 429's retry-after, and together the polls
    # were more than the per-address limit allows in a minute.
    assert {wait for colleague in colleagues for wait in colleague.waits} == {1.0}
    polls = sum(len(colleague.waits) + 1 for colleague in colleagues)
    assert polls >= PEOPLE * (APPROVED_AFTER_WAITS + 1) > ENROLLMENT_LIMIT
    assert sorted(Person.objects.values_list("email", flat=True)) == sorted(f"p{n}@example.com" for n in range(PEOPLE))


def test_a_flood_of_polls_with_made_up_sign_ins_is_limited_per_address(office):
    gateway, _ = office
    answers = [
        httpx.post(f"{gateway.url}/auth/oidc/poll", json={"sign_in": f"made-up-{n:04d}-{uuid.uuid4().hex}"}) for n in range(8)
    ]
    codes = [answer.json()["error"]["details"]["error_code"] for answer in answers]
    assert codes == ["sign_in_expired"] * 5 + ["enrollment_rate_limited"] * 3
    assert [answer.status_code for answer in answers[5:]] == [429] * 3
    assert all(float(answer.headers["retry-after"]) > 0 for answer in answers[5:])
