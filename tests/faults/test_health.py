"""Deep health tells the truth about Redis, quickly: a Redis that accepts connections and never
answers used to keep /healthz?deep=1 from answering at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from django.test import AsyncClient

import proxyproject.lib.redis


@pytest.fixture
def hung_redis(settings) -> Iterator[None]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        settings.HEALTH_CHECK_TIMEOUT = 0.3
        proxyproject.lib.redis._clients.clear()
        yield
    proxyproject.lib.redis._clients.clear()


async def test_deep_health_names_a_hung_redis_within_its_timeout(db, hung_redis):
    answer = await AsyncClient().get("/healthz", {"deep": "1"})
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["redis"]["detail"] == "no answer within 0.3 s"
    assert body["checks"]["database"]["status"] == "ok"
