"""Live gateways for the desktop client's tests, and a client configuration per test (its own
state directory, the file key store, fast refresh timings)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyclient import ProxyConfig
from tests.servers import ServerProcess, gateway_process

# Enrollment is rate limited per client IP and every test enrolls from 127.0.0.1; on Redis the
# limit is shared by all the gateways of the test run.
GATEWAY_ENV = {"ENROLLMENT_RATE_LIMIT_MAX": "100000", "ENROLLMENT_MODE": "open"}
SHORT_LIVED_HOURS = "0.001"  # 3.6 s wrapper tokens: the refresh falls due 1.8 s after issue
FAKE_UPSTREAM_KEY = "sk-ant-test-master-key-0001"


def start_gateway(**env: str) -> ServerProcess:
    return gateway_process(**{**GATEWAY_ENV, **env}).start()


@pytest.fixture(scope="module")
def module_gateway(django_db_setup) -> Iterator[ServerProcess]:
    """One gateway process per test module (starting one costs seconds). It survives the flush
    between transactional tests: it reseeds its signing key from JWT_SECRET with the same kid, and
    every test enrolls devices of its own."""
    server = start_gateway()
    yield server
    server.stop()


@pytest.fixture
def gateway(module_gateway, transactional_db) -> ServerProcess:
    return module_gateway


@pytest.fixture(scope="module")
def module_short_lived_gateway(django_db_setup) -> Iterator[ServerProcess]:
    server = start_gateway(JWT_EXPIRATION_HOURS=SHORT_LIVED_HOURS)
    yield server
    server.stop()


@pytest.fixture
def short_lived_gateway(module_short_lived_gateway, transactional_db) -> ServerProcess:
    return module_short_lived_gateway


def client_config(server_url: str, state_dir: Path, **overrides: object) -> ProxyConfig:
    fields: dict[str, object] = {
        "app_version": "9.8.7",
        "bootstrap_url": f"{server_url}/bootstrap",
        "state_dir": state_dir,
        "use_keyring": False,
        "check_interval": 0.1,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "request_timeout": 5.0,
    }
    fields.update(overrides)
    return ProxyConfig(**fields)  # type: ignore[arg-type]


class ConsoleLines(list):
    """Collects what ProxyClient announces, in order."""

    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def console() -> ConsoleLines:
    return ConsoleLines()
