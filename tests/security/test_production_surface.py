"""Reconnaissance of a production instance: with debug off the API docs and schema, and the deep
health check's details, are for operators only (a setting publishes the docs); the docs page loads
nothing from another host; the plain /healthz answers exactly as the seed says."""

from __future__ import annotations

import re
import secrets

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from proxyproject import health
from tests.gateway.conftest import call_gateway
from tests.servers import gateway_process
from tokens.operators import create_operator_api_key

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.fixture
def production(settings):
    settings.API_DOCS_PUBLIC = False
    settings.HEALTH_DETAILS_PUBLIC = False


@pytest.fixture
async def operator_key(transactional_db) -> str:
    _, secret = await sync_to_async(create_operator_api_key)(name="oncall", created_by=None)
    return secret


async def login(username: str, *, is_staff: bool) -> AsyncClient:
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.create_user)(username=username, password="correct-horse-9", is_staff=is_staff)
    browser = AsyncClient()
    assert await browser.alogin(username=username, password="correct-horse-9")
    return browser


def headers_of(answer) -> dict[str, str]:
    return {name.lower(): value for name, value in answer.headers.items()}


def error_code(answer) -> str:
    return orjson.loads(answer.body)["error"]["details"]["error_code"]


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/docs"])
async def test_anonymous_cannot_read_the_api_schema_or_docs_in_production(production, transactional_db, path):
    answer = await call_gateway("GET", path, headers={"host": "127.0.0.1", "accept": "application/json"})
    assert (answer.status, error_code(answer)) == (401, "invalid_token")
    assert b"/admin/usage" not in answer.body


async def test_a_browser_without_credentials_is_sent_to_the_login_for_the_docs_page(production, transactional_db):
    answer = await call_gateway("GET", "/api/docs", headers={"host": "127.0.0.1", "accept": "text/html,application/xhtml+xml"})
    assert (answer.status, headers_of(answer)["location"]) == (302, "/admin/login/?next=/api/docs")


async def test_a_bogus_operator_key_cannot_read_the_api_schema(production, transactional_db):
    answer = await call_gateway(
        "GET", "/api/openapi.json", headers={"host": "127.0.0.1", "authorization": "Bearer gwop_" + secrets.token_urlsafe(32)}
    )
    assert (answer.status, error_code(answer)) == (401, "invalid_token")


async def test_a_logged_in_user_who_is_not_staff_cannot_read_the_api_schema(production, transactional_db):
    browser = await login("visitor", is_staff=False)
    response = await browser.get("/api/openapi.json")
    assert (response.status_code, response.json()["error"]["details"]["error_code"]) == (403, "permission_denied")


async def test_an_operator_key_reads_the_api_schema_and_no_cache_keeps_it(production, operator_key):
    answer = await call_gateway(
        "GET", "/api/openapi.json", headers={"host": "127.0.0.1", "authorization": f"Bearer {operator_key}"}
    )
    assert answer.status == 200
    assert "/admin/usage" in orjson.loads(answer.body)["paths"]
    assert set(headers_of(answer)["cache-control"].split(", ")) == {"private", "no-store"}


async def test_a_staff_session_reads_the_docs_page(production, transactional_db):
    browser = await login("ops", is_staff=True)
    response = await browser.get("/api/docs")
    assert response.status_code == 200 and b'id="swagger-ui"' in response.content


async def test_a_setting_publishes_the_docs(settings, transactional_db):
    settings.API_DOCS_PUBLIC = True
    answer = await call_gateway("GET", "/api/openapi.json", headers={"host": "127.0.0.1"})
    assert answer.status == 200 and "/bootstrap" in orjson.loads(answer.body)["paths"]
    assert "cache-control" not in headers_of(answer)


async def test_the_docs_page_loads_every_asset_from_this_server(settings, transactional_db):
    settings.API_DOCS_PUBLIC = True
    page = await call_gateway("GET", "/api/docs", headers={"host": "127.0.0.1"})
    assert page.status == 200
    html = page.body.decode()
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert re.search(r'"validatorUrl":\s*null', html)  # Swagger UI would otherwise ask validator.swagger.io
    assets = ASSET.findall(html)
    assert sorted(assets) == sorted(
        f"{settings.STATIC_URL}ninja/{name}"
        for name in ("swagger-ui.css", "favicon.svg", "favicon.png", "swagger-ui-bundle.js", "swagger-ui-init.js")
    )
    for asset in assets:
        answer = await call_gateway("GET", asset, headers={"host": "127.0.0.1"})
        assert answer.status == 200 and len(answer.body) > 100, asset


async def test_anonymous_deep_health_gets_the_status_only(production, transactional_db):
    answer = await call_gateway("GET", "/healthz", query=b"deep=1", headers={"host": "127.0.0.1"})
    assert answer.status == 200
    assert set(orjson.loads(answer.body)) == {"status", "timestamp"} and orjson.loads(answer.body)["status"] == "ok"


async def test_anonymous_deep_health_of_a_broken_dependency_gets_503_without_its_details(
    production, transactional_db, monkeypatch
):
    async def broken() -> None:
        raise ConnectionError("cache host 10.0.0.7:6379 unreachable")

    monkeypatch.setitem(health.DEEP_CHECKS, "cache", broken)
    answer = await call_gateway("GET", "/healthz", query=b"deep=1", headers={"host": "127.0.0.1"})
    assert answer.status == 503
    assert set(orjson.loads(answer.body)) == {"status", "timestamp"} and orjson.loads(answer.body)["status"] == "degraded"
    assert b"10.0.0.7" not in answer.body


async def test_an_operator_key_sees_the_deep_health_details(production, operator_key):
    answer = await call_gateway(
        "GET", "/healthz", query=b"deep=1", headers={"host": "127.0.0.1", "authorization": f"Bearer {operator_key}"}
    )
    assert answer.status == 200
    assert {name: check["status"] for name, check in orjson.loads(answer.body)["checks"].items()} == {
        name: "ok" for name in health.DEEP_CHECKS
    }


async def test_a_staff_session_sees_the_deep_health_details(production, transactional_db):
    browser = await login("ops", is_staff=True)
    response = await browser.get("/healthz", {"deep": "1"})
    assert set(response.json()["checks"]) == set(health.DEEP_CHECKS)


async def test_plain_healthz_keeps_the_seed_answer(production, transactional_db):
    answer = await call_gateway("GET", "/healthz", headers={"host": "127.0.0.1"})
    body = orjson.loads(answer.body)
    assert (answer.status, list(body), body["status"]) == (200, ["status", "timestamp"], "ok")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


def test_a_server_with_debug_off_hides_docs_and_health_details_by_default(transactional_db):
    """The defaults follow DJANGO_DEBUG, on a real server started as in production."""
    _, key = create_operator_api_key(name="oncall", created_by=None)
    server = gateway_process(
        DJANGO_DEBUG="false",
        JWT_SECRET=secrets.token_urlsafe(32),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        ENROLLMENT_MODE="approval",
        LOG_LEVEL="warning",
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/api/openapi.json").status_code == 401
            assert set(http.get("/healthz", params={"deep": "1"}).json()) == {"status", "timestamp"}
            operator = {"authorization": f"Bearer {key}"}
            assert "checks" in http.get("/healthz", params={"deep": "1"}, headers=operator).json()
            page = http.get("/api/docs", headers=operator)
            assert page.status_code == 200 and "https://" not in page.text
            assert [http.get(asset).status_code for asset in ASSET.findall(page.text)] == [200] * 5
    finally:
        server.stop()
