"""The database going away under a running gateway: /v1 recovers without a restart, and answers a
clear 503 while it cannot read what it needs."""

from __future__ import annotations

import socket
import threading

import httpx
import orjson
import pytest
from django.db import connection
from django.test import Client

from fake_anthropic import FakeAnthropic
from tests.servers import free_port, gateway_process
from tests.support import MASTER_KEY, MESSAGE_BODY, poll_until
from usage.models import UsageRecord
from usage.writer import MAX_BACKOFF_SECONDS


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
        server = gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=MASTER_KEY, DB_CONN_MAX_AGE="60", REDIS_URL=""
        ).start()
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
    away = (
        f"postgres://postgres@127.0.0.1:{free_port()}/gone"
        if connection.vendor == "postgresql"
        else f"sqlite:///{tmp_path}/missing-dir/db.sqlite3"
    )
    server = gateway_process(DATABASE_URL=away, REDIS_URL="").start()
    try:
        answer = messages(server, enrolled.json()["wrapper_token"])  # its signing key must be read from the database
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert orjson.loads(answer.content)["error"] == {
            "type": "api_error",
            "message": "The gateway's database is unreachable. Retry shortly.",
            "details": {"error_code": "database_unavailable"},
        }
    finally:
        server.stop()


def test_v1_answers_503_while_the_database_accepts_connections_and_never_answers(transactional_db):
    """A hung server, or a pooler with no backend left: the connection opens at the TCP level and
    nothing comes back. The gateway used to hang in start-up, and every request with it."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (CI's second pass)")
    enrolled = Client().post("/bootstrap", {"device_id": "db-hung", "app_version": "1.0.0"}, content_type="application/json")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        db = connection.settings_dict
        server = gateway_process(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/{db['NAME']}", REDIS_URL="", DB_TIMEOUT="2"
        ).start(timeout=60)
        try:
            answer = messages(server, enrolled.json()["wrapper_token"])
            assert answer.status_code == 503, answer.text
            assert orjson.loads(answer.content)["error"]["details"]["error_code"] == "database_unavailable"
            assert "Database unavailable" in server.log()
        finally:
            server.stop()


class DatabaseLink:
    """A TCP relay between the gateway and PostgreSQL that the test cuts and restores: while it is
    down, connections are refused, as from a database host that is restarting. While it is frozen,
    what either side sends is taken and held, as by a server that has hung."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.flowing = threading.Event()
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for sock in self.sockets:
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        db = connection.settings_dict
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)), timeout=5)
            except OSError:  # refused as the database would be: the gateway retries on its next read
                client.close()
                continue
            server.settimeout(None)
            self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_v1_answers_503_while_its_open_database_connection_has_gone_silent(transactional_db):
    """The server hangs mid-session: the gateway's connection is open, the query is sent and taken,
    and no answer comes. A device whose state must be read gets 503 after DB_TIMEOUT instead of a
    request that never ends; once the server answers again, the device is served."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (CI's second pass)")
    link = DatabaseLink()
    link.up()
    db = connection.settings_dict
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(
            DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{link.port}/{db['NAME']}",
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=MASTER_KEY,
            DB_CONN_MAX_AGE="60",
            DB_TIMEOUT="2",
            REDIS_URL="",
            REVOCATION_CACHE_SECONDS="60",  # the first device stays cached through the freeze
        ).start()
        try:
            first, second = bootstrap(server, "db-silent-first"), bootstrap(server, "db-silent-second")
            assert messages(server, first).status_code == 200
            link.freeze()
            answer = messages(server, second)  # its device state is read on the connection that went silent
            assert answer.status_code == 503, answer.text
            assert orjson.loads(answer.content)["error"]["details"]["error_code"] == "database_unavailable"
            assert messages(server, first).status_code == 200  # cached: the stuck read holds up no one else
            link.thaw()
            served = poll_until(
                lambda: messages(server, second).status_code == 200, 20, "the device served again", context=server.log
            )
            assert served
        finally:
            server.stop()
            link.down()


def test_a_request_refused_while_the_database_is_away_is_recorded_once_it_is_back(transactional_db):
    """Refused before the device is known (its signing key cannot be read): the record has no
    device, but the request id, path, status and error type; the gateway's own writer stores it."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (CI's second pass)")
    enrolled = Client().post(
        "/bootstrap", {"device_id": "db-away-recorded", "app_version": "1.0.0"}, content_type="application/json"
    )
    link = DatabaseLink()
    db = connection.settings_dict
    server = gateway_process(
        DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{link.port}/{db['NAME']}",
        REDIS_URL="",
        USAGE_FLUSH_INTERVAL="0.1",
    ).start()
    try:
        answer = messages(server, enrolled.json()["wrapper_token"])
        assert (answer.status_code, orjson.loads(answer.content)["error"]["details"]["error_code"]) == (
            503,
            "database_unavailable",
        )
        request_id = answer.headers["request-id"]
        assert not UsageRecord.objects.filter(request_id=request_id).exists()
        link.up()
        # The writer backs off up to MAX_BACKOFF_SECONDS between tries while the database is away.
        poll_until(
            lambda: UsageRecord.objects.filter(request_id=request_id).exists(),
            MAX_BACKOFF_SECONDS + 15,
            "the record once the database is back",
            context=server.log,
        )
    finally:
        server.stop()
        link.down()
    record = UsageRecord.objects.get(request_id=request_id)
    assert (record.device_id, record.device_ref, record.organization_id, record.endpoint, record.method) == (
        None,
        "",
        None,
        "/v1/messages",
        "POST",
    )
    assert (record.status, record.error_type, record.is_error, record.streamed, record.input_tokens, record.cost) == (
        503,
        "database_unavailable",
        True,
        False,
        0,
        0,
    )
