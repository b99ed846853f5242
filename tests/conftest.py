"""The shared cast of tests: real servers, the services CI provides, and a small named cast of
objects (an organization, its device, a device of no organization, a blocked device, an operator)
for the tests that need such objects rather than particular ones."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from proxyproject.lib.process_state import forget_process_state
from tests.servers import gateway_process
from tests.support import OPERATOR_PASSWORD


@pytest.fixture
def operator(db):
    """A superuser, as the first operator of a deployment is."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ops", password=OPERATOR_PASSWORD)


@pytest.fixture
def operator_client(client, operator):
    """Django's test client, signed in to the admin as the operator."""
    client.force_login(operator)
    return client


@pytest.fixture
def acme(db):
    from tokens.models import Organization

    return Organization.objects.create(name="Acme")


@pytest.fixture
def acme_device(acme):
    from tokens.models import Device

    return Device.objects.create(device_id="laptop-acme", organization=acme)


@pytest.fixture
def lone_device(db):
    from tokens.models import Device

    return Device.objects.create(device_id="laptop-lone")


@pytest.fixture
def blocked_device(db):
    from tokens.models import Device, DeviceStatus

    return Device.objects.create(device_id="laptop-blocked", status=DeviceStatus.BLOCKED)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs Redis is marked `redis`, so `-m redis` runs the shared-state tests alone (CI's
    Redis Cluster pass); backends chosen by a parameter mark their Redis case themselves."""
    for item in items:
        if "redis_required" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


@pytest.fixture
def redis_required() -> str:
    """Tests of shared state run on real Redis; on the embedded defaults they are skipped."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI's second pass)")
    return settings.REDIS_URL


@pytest.fixture
def live_gateway(transactional_db):
    """The gateway as a real server process (uvicorn) sharing the test database."""
    server = gateway_process().start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def close_async_thread_connections(django_db_setup, django_db_blocker):
    """Async tests reach the database from asgiref's shared sync thread, and the usage writer from
    its own; close those threads' connections before the test database is dropped (PostgreSQL
    refuses to drop a database in use)."""
    yield
    from usage.writer import _executor as usage_writer_thread

    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())
        usage_writer_thread.submit(connections.close_all).result(timeout=10)
        end_other_sessions_on_the_test_database()


def end_other_sessions_on_the_test_database(timeout: float = 10.0) -> None:
    """Server processes this run started (gateways, writers) close their sessions as they exit, but
    PostgreSQL may still count one a moment later; the test database is this run's alone, so what
    is left after `timeout` is ended rather than left to make the drop fail."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    other_sessions = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        cursor.execute(other_sessions)
        while (pids := [row[0] for row in cursor.fetchall()]) and time.monotonic() < deadline:
            time.sleep(0.1)
            cursor.execute(other_sessions)
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    connection.close()


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Every test starts and ends with this process's state forgotten (signing keyring, device
    states, upstream key pool, local rate limits and breaker: `proxyproject.lib.process_state`): the
    database is rolled back between tests, and a device id reused by the next test must not be
    answered from the previous test's copy."""
    forget_process_state()
    yield
    forget_process_state()


@pytest.fixture(scope="module", autouse=True)
def usage_spool_of_this_file(tmp_path_factory):
    """Usage records that tests (and the servers they start) queue on local disk go to a temporary
    directory of this test file, not under var/ where they would outlive the test database they
    belong to. One per file: a server stopped before it drained its spool would otherwise leave
    records there that a later file's drain stores in the middle of that file's tests."""
    spool = tmp_path_factory.mktemp("usage-spool")
    os.environ["USAGE_SPOOL_DIR"] = str(spool)
    settings.USAGE_SPOOL_DIR = spool
    return spool


@pytest.fixture
def two_gateways(redis_required, transactional_db, settings):
    """Two gateway instances (separate processes) on the same database and Redis, in front of one
    fake upstream: (fake, first, second)."""
    from fake_anthropic import FakeAnthropic
    from tests.support import MASTER_KEY

    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        env = {
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "ANTHROPIC_BASE_URL": fake.base_url,
            "ANTHROPIC_API_KEY": MASTER_KEY,
        }
        first = gateway_process(**env).start()
        try:
            second = gateway_process(**env).start()
        except Exception:
            first.stop()
            raise
        yield fake, first, second
        first.stop()
        second.stop()


@pytest.fixture(scope="session", autouse=True)
def flush_retried_after_a_deadlock():
    """Transactional tests end with a TRUNCATE of every table, in no fixed order, while live gateway
    processes (some shared by a whole module) may still be writing usage or counters: PostgreSQL can
    then pick the TRUNCATE as a deadlock victim. The flush is retried; the writers retry on their own."""
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown_with_retry(self) -> None:
        for attempt in range(5):
            try:
                return original(self)
            except CommandError as exc:
                if attempt == 4 or "deadlock detected" not in str(exc.__cause__):
                    raise

    TransactionTestCase._fixture_teardown = teardown_with_retry
    yield
    TransactionTestCase._fixture_teardown = original


@pytest.fixture
def people_provider(settings):
    """The test identity provider, with the gateway signing people in on devices against it
    (ENROLLMENT_MODE=oidc,secret: people sign in, machines may still bootstrap with the secret)."""
    from tests.oidc_provider import OIDCProvider

    running = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    settings.ENROLLMENT_MODE = "oidc,secret"
    settings.BOOTSTRAP_SECRET = "machines-bootstrap-secret-0123456789"
    settings.PEOPLE_OIDC_ISSUER = running.issuer
    settings.PEOPLE_OIDC_CLIENT_ID = running.client_id
    settings.PEOPLE_OIDC_CLIENT_SECRET = running.client_secret
    forget_process_state()
    yield running
    running.stop()
