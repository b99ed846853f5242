"""A benchmark run on PostgreSQL and Redis works in a database and a key prefix of its own, so runs
never meet each other's signing keys or records, and leaves neither behind."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from bench.processes import free_port
from bench.stores import run_stores, with_database_name, with_local_stores
from proxyproject.lib.redis import cluster_configured, get_sync_redis
from tests import servers


def test_the_database_name_is_swapped_in_the_url():
    assert (
        with_database_name("postgres://u:p@db:5432/test?sslmode=disable", "bench_1")
        == "postgres://u:p@db:5432/bench_1?sslmode=disable"
    )


def test_embedded_defaults_need_nothing_of_their_own():
    with run_stores({"DATABASE_URL": "sqlite:////tmp/x.sqlite3"}) as overrides:
        assert overrides == {}


def database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


@pytest.mark.django_db
def test_a_run_on_postgres_and_redis_gets_its_own_database_and_prefix_and_removes_them(redis_required):
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL on PostgreSQL (CI's second pass)")
    admin_url = servers.test_database_url()
    client = get_sync_redis()  # a single Redis or, in CI's third pass, a cluster
    with run_stores({"DATABASE_URL": admin_url, "REDIS_URL": redis_required}) as overrides:
        name = overrides["DATABASE_URL"].rsplit("/", 1)[1]
        assert name.startswith("bench_") and database_exists(admin_url, name)
        with psycopg.connect(overrides["DATABASE_URL"]) as own:
            assert own.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        prefix = overrides["REDIS_KEY_PREFIX"]
        client.set(f"{prefix}:ratelimit:x", 1)
    assert not database_exists(admin_url, name)
    assert client.exists(f"{prefix}:ratelimit:x") == 0


def test_urls_that_are_set_are_used_as_they_are():
    environment = {"DATABASE_URL": "sqlite:////tmp/x.sqlite3", "BENCH_POSTGRES_URL": "postgres://nobody@127.0.0.1:1/x"}
    assert with_local_stores(environment) == environment


def test_local_servers_that_do_not_answer_leave_the_run_embedded():
    closed = free_port()
    environment = {
        "BENCH_POSTGRES_URL": f"postgres://postgres@127.0.0.1:{closed}/postgres",
        "BENCH_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
    }
    assert with_local_stores(environment) == environment


@pytest.mark.django_db
def test_local_servers_that_answer_make_the_run_production_like(redis_required):
    if connection.vendor != "postgresql" or cluster_configured():
        pytest.skip("needs PostgreSQL and a single Redis (CI's second pass)")
    environment = {"BENCH_POSTGRES_URL": servers.test_database_url(), "BENCH_REDIS_URL": redis_required}
    assert with_local_stores(environment) == {
        **environment,
        "DATABASE_URL": servers.test_database_url(),
        "REDIS_URL": redis_required,
    }
