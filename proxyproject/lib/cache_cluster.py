"""django-redis on a Redis Cluster: django-redis builds a plain client over a connection pool, which
a cluster answers with MOVED for most keys; this factory hands it redis-py's `RedisCluster` instead.
The cache's own commands (get, set, delete, incr) touch one key each, so they route by slot."""

from __future__ import annotations

from typing import Any

import redis
from django_redis.pool import ConnectionFactory

from proxyproject.lib.redis import client_url


class ClusterConnectionFactory(ConnectionFactory):
    def connect(self, url: str) -> Any:
        params = self.make_connection_params(url)
        return redis.RedisCluster.from_url(
            client_url(params["url"]),
            socket_timeout=params.get("socket_timeout"),
            socket_connect_timeout=params.get("socket_connect_timeout"),
        )

    def disconnect(self, connection: Any) -> None:
        connection.close()
