"""List endpoints answer the caller's own resources only, paginated as the API paginates:
`limit`, `after_id` (older), `before_id` (newer), `has_more`, `first_id`, `last_id`, newest first."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.security.owned import create_batch, file_headers, upload_file
from tests.support import MASTER_KEY, enroll_device

pytestmark = pytest.mark.django_db(transaction=True)


async def page(
    token: str, path: str, query: str, headers: dict[str, str] | None = None
) -> tuple[list[str], bool, str | None, str | None]:
    answer = await call_gateway("GET", path, headers=headers or bearer(token), query=query.encode())
    assert answer.status == 200, answer.body
    body = orjson.loads(answer.body)
    return [item["id"] for item in body["data"]], body["has_more"], body["first_id"], body["last_id"]


@pytest.fixture
async def interleaved_batches(fake_upstream):
    """Device A's five batches with device B's three created between them: (A's token, A's ids oldest first)."""
    device_a, device_b = await enroll_device(), await enroll_device()
    mine = []
    for index in range(5):
        mine.append(await create_batch(device_a))
        if index < 3:
            await create_batch(device_b)
    return device_a, mine


async def test_after_id_pages_walk_only_the_callers_batches_newest_first(interleaved_batches):
    token, (a1, a2, a3, a4, a5) = interleaved_batches
    path = "/v1/messages/batches"
    assert await page(token, path, "limit=2") == ([a5, a4], True, a5, a4)
    assert await page(token, path, f"limit=2&after_id={a4}") == ([a3, a2], True, a3, a2)
    assert await page(token, path, f"limit=2&after_id={a2}") == ([a1], False, a1, a1)
    assert await page(token, path, f"after_id={a1}") == ([], False, None, None)


async def test_before_id_pages_walk_back_towards_the_newest(interleaved_batches):
    token, (a1, a2, a3, a4, a5) = interleaved_batches
    path = "/v1/messages/batches"
    assert await page(token, path, f"limit=2&before_id={a1}") == ([a3, a2], True, a3, a2)
    assert await page(token, path, f"limit=2&before_id={a3}") == ([a5, a4], False, a5, a4)
    assert await page(token, path, "limit=20") == ([a5, a4, a3, a2, a1], False, a5, a1)


async def test_a_file_gone_upstream_is_skipped_and_the_page_still_fills(fake_upstream):
    token = await enroll_device()
    f1, f2, f3 = [await upload_file(token) for _ in range(3)]
    async with httpx.AsyncClient(base_url=fake_upstream.base_url, headers={"x-api-key": MASTER_KEY}) as upstream:
        assert (await upstream.delete(f"/v1/files/{f2}")).status_code == 200
    headers = file_headers(token)
    assert await page(token, "/v1/files", "limit=2", headers) == ([f3, f1], False, f3, f1)
    assert await page(token, "/v1/files", "limit=1", headers) == ([f3], True, f3, f3)


async def test_another_devices_id_is_no_cursor(fake_upstream):
    device_a, device_b = await enroll_device(), await enroll_device()
    theirs = await create_batch(device_b)
    before = len(fake_upstream.requests)
    answer = await call_gateway("GET", "/v1/messages/batches", headers=bearer(device_a), query=f"after_id={theirs}".encode())
    assert (answer.status, orjson.loads(answer.body)["error"]["type"]) == (400, "invalid_request_error")
    assert len(fake_upstream.requests) == before


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "after_id=a&before_id=b"])
async def test_a_malformed_page_request_is_refused_as_the_api_refuses_it(fake_upstream, query):
    token = await enroll_device()
    answer = await call_gateway("GET", "/v1/messages/batches", headers=bearer(token), query=query.encode())
    assert (answer.status, orjson.loads(answer.body)["error"]["type"]) == (400, "invalid_request_error")
