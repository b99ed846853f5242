from __future__ import annotations

import datetime as dt

import pytest
from django.test import AsyncClient

from proxyproject import health


def parse_timestamp(value: str) -> dt.datetime:
    assert value.endswith("Z")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_healthz_returns_ok_and_iso_timestamp():
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp"}
    assert body["status"] == "ok"
    age = dt.datetime.now(dt.UTC) - parse_timestamp(body["timestamp"])
    assert dt.timedelta(0) <= age < dt.timedelta(seconds=5)


@pytest.mark.django_db
async def test_deep_healthz_reports_each_dependency():
    response = await AsyncClient().get("/healthz?deep=1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {name: "ok" for name in health.DEEP_CHECKS}
    assert {"database", "cache", "broker"} <= set(body["checks"])


@pytest.mark.django_db
async def test_deep_healthz_is_503_when_a_dependency_is_down(monkeypatch):
    async def broken() -> None:
        raise ConnectionError("cache host unreachable")

    monkeypatch.setitem(health.DEEP_CHECKS, "cache", broken)
    response = await AsyncClient().get("/healthz?deep=1")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["status"] == "down"
    assert body["checks"]["cache"]["detail"] == "ConnectionError: cache host unreachable"
    assert body["checks"]["database"]["status"] == "ok"
