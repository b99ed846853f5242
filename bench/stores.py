"""A run's own PostgreSQL database and Redis key prefix, when DATABASE_URL / REDIS_URL are set.

Every run enrolls a device and signs its tokens with fresh secrets; on a database an earlier run
used, the gateway would refuse to start (signing keys encrypted under another secret), and its
records would mix with the earlier run's. So a run creates a database of its own on the same server
and drops it afterwards, and puts its Redis keys under a prefix of its own, deleted afterwards.
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
