"""A run's own PostgreSQL database and Redis key prefix, when DATABASE_URL / REDIS_URL are set or
the local servers answer.

Every run enrolls a device and signs its tokens with fresh secrets; on a database an earlier run
used, the gateway would refuse to start (signing keys encrypted under another secret), and its
records would mix with the earlier run's. So a run creates a database of its own on the same server
and drops it afterwards, and puts its Redis keys under a prefix of its own, deleted afterwards.

Without DATABASE_URL and REDIS_URL, the servers of BENCH_POSTGRES_URL and BENCH_REDIS_URL (default:
PostgreSQL and Redis on 127.0.0.1) are used when they answer, so a plain `make bench` measures the
production-like gateway wherever they run; where they do not, it says so and measures the rest.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")
LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
ANSWER_TIMEOUT = 2.0


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=int(ANSWER_TIMEOUT)):
            return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=ANSWER_TIMEOUT, socket_timeout=ANSWER_TIMEOUT)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def with_local_stores(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment`, plus DATABASE_URL and REDIS_URL of the local servers when neither is set and
    both answer."""
    merged = dict(environment)
    if merged.get("DATABASE_URL") or merged.get("REDIS_URL"):
        return merged
    database = merged.get("BENCH_POSTGRES_URL", LOCAL_POSTGRES)
    cache = merged.get("BENCH_REDIS_URL", LOCAL_REDIS)
    if postgres_answers(database) and redis_answers(cache):
        merged.update({"DATABASE_URL": database, "REDIS_URL": cache})
    return merged


def with_database_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def own_postgres_database(url: str) -> Iterator[str]:
    """A new empty database next to the one `url` names; yields its URL, drops it on exit."""
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database_name(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_redis_keys(url: str, prefix: str) -> int:
    """On a Redis Cluster (a `redis+cluster://` URL) the scan visits every node and DEL splits by slot."""
    scheme, _, rest = url.partition("://")
    client = (
        redis.RedisCluster.from_url(f"{scheme.removesuffix('+cluster')}://{rest}")
        if scheme.endswith("+cluster")
        else redis.Redis.from_url(url)
    )
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return client.delete(*keys) if keys else 0
    finally:
        client.close()


@contextlib.contextmanager
def run_stores(environment: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Settings for this run's servers: DATABASE_URL of its own database, REDIS_KEY_PREFIX of its own."""
    overrides: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        database_url = environment.get("DATABASE_URL", "")
        if urlsplit(database_url).scheme in POSTGRES_SCHEMES:
            overrides["DATABASE_URL"] = stack.enter_context(own_postgres_database(database_url))
        redis_url = environment.get("REDIS_URL", "")
        if redis_url:
            overrides["REDIS_KEY_PREFIX"] = prefix = f"bench-{secrets.token_hex(6)}"
            stack.callback(delete_redis_keys, redis_url, prefix)
        yield overrides
