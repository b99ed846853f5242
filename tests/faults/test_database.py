"""The database going away under a running gateway: /v1 recovers without a restart, and answers a
clear 503 while it cannot read what it needs."""
from __future__ import annotations

import httpx
import orjson
import pytest
from django.db import connection
from django.test import Client

from fake_anthropic import FakeAnthropic
from tests.gateway.conftest import MASTER_KEY, MESSAGE_BODY
from tests.servers import free_port, gateway_process


def messages(server, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01"}
    return httpx.post(server.url + "/v1/messages", content=MESSAGE_BODY, headers=headers, timeout=15)


def bootstrap(server, device_id: str) -> str:
    answer = httpx.post(server.url + "/bootstrap", json={"device_id": device_id, "app_version": "1.0.0"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["wrapper_token"]


def session_pids() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {row[0] for row in cursor.fetchall()}


def terminate_sessions_except(kept: set[int]) -> int:
    """What a PostgreSQL restart or failover does to the gateway's connections (this test process's
    own, opened before the gateway started, are kept: later tests still use them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
            [list(kept)],
        )
        return cursor.fetchone()[0]


def test_v1_serves_again_after_its_database_sessions_are_terminated(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (CI's second pass)")
    ours = session_pids()
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        # Connections kept between requests, as in production; no Redis, so device state comes from the database.
        server = gateway_process(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=MASTER_KEY, DB_CONN_MAX_AGE="60", REDIS_URL="").start()
        try:
            first, second = bootstrap(server, "db-fault-first"), bootstrap(server, "db-fault-second")
            assert messages(server, first).status_code == 200
            assert terminate_sessions_except(ours) >= 1
            answer = messages(server, second)  # its device state is read on the dead connection
            assert answer.status_code == 200, answer.text
            assert messages(server, first).status_code == 200
        finally:
            server.stop()


def test_v1_answers_503_database_unavailable_while_the_database_is_away(transactional_db, tmp_path):
    enrolled = Client().post("/bootstrap", {"device_id": "db-away", "app_version": "1.0.0"}, content_type="application/json")
    away = (f"postgres://postgres@127.0.0.1:{free_port()}/gone" if connection.vendor == "postgresql"
            else f"sqlite:///{tmp_path}/missing-dir/db.sqlite3")
    server = gateway_process(DATABASE_URL=away, REDIS_URL="").start()
    try:
        answer = messages(server, enrolled.json()["wrapper_token"])  # its signing key must be read from the database
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert orjson.loads(answer.content)["error"] == {
            "type": "api_error", "message": "The gateway's database is unreachable. Retry shortly.",
            "details": {"error_code": "database_unavailable"},
        }
    finally:
        server.stop()
