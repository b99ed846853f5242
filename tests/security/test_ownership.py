"""Attack 3 of issue 13: devices share one upstream organization, so device B could list, read,
fetch the results of, cancel and delete device A's batches, and list, read, download and delete
A's files. Each is refused as if the resource did not exist, with nothing sent upstream."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.security.owned import batch_body, create_batch, file_headers, listed_ids, not_found_shape, upload_file
from tests.support import MASTER_KEY, enroll, enroll_device
from tests.support import MESSAGE_BODY as MESSAGE

pytestmark = pytest.mark.django_db(transaction=True)

NOT_FOUND = ("error", "not_found_error", ["details", "message", "type"])


async def refused_without_forwarding(fake, method: str, path: str, token: str, **extra) -> dict:
    before = len(fake.requests)
    answer = await call_gateway(method, path, headers=extra.pop("headers", bearer(token)), **extra)
    assert (answer.status, not_found_shape(answer.body)) == (404, NOT_FOUND)
    assert len(fake.requests) == before
    return orjson.loads(answer.body)


@pytest.fixture
async def two_devices(fake_upstream):
    return await enroll_device(), await enroll_device()


async def test_device_b_listing_batches_sees_none_of_device_a_s(fake_upstream, two_devices):
    device_a, device_b = two_devices
    mine = await create_batch(device_a)
    theirs = await create_batch(device_b)
    answer_b = await call_gateway("GET", "/v1/messages/batches", headers=bearer(device_b))
    answer_a = await call_gateway("GET", "/v1/messages/batches", headers=bearer(device_a))
    assert (answer_b.status, listed_ids(answer_b.body)) == (200, [theirs])
    assert (answer_a.status, listed_ids(answer_a.body)) == (200, [mine])
    upstream_lists = [seen for seen in fake_upstream.requests if seen.method == "GET" and seen.path == "/v1/messages/batches"]
    assert upstream_lists == []


async def test_device_b_reading_device_a_s_batch_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    body = await refused_without_forwarding(fake_upstream, "GET", f"/v1/messages/batches/{batch}", device_b)
    assert body["error"]["message"] == f"message_batch {batch} not found"


async def test_device_b_fetching_device_a_s_batch_results_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    await refused_without_forwarding(fake_upstream, "GET", f"/v1/messages/batches/{batch}/results", device_b)


async def test_device_b_cancelling_device_a_s_batch_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    await refused_without_forwarding(fake_upstream, "POST", f"/v1/messages/batches/{batch}/cancel", device_b)
    still = await call_gateway("GET", f"/v1/messages/batches/{batch}", headers=bearer(device_a))
    assert orjson.loads(still.body)["cancel_initiated_at"] is None


async def test_device_b_deleting_device_a_s_batch_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    await refused_without_forwarding(fake_upstream, "DELETE", f"/v1/messages/batches/{batch}", device_b)
    assert (await call_gateway("GET", f"/v1/messages/batches/{batch}", headers=bearer(device_a))).status == 200


async def test_device_b_naming_device_a_s_batch_under_an_unknown_suffix_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    await refused_without_forwarding(fake_upstream, "GET", f"/v1/messages/batches/{batch}/anything/else", device_b)


async def test_device_b_listing_files_sees_none_of_device_a_s(fake_upstream, two_devices):
    device_a, device_b = two_devices
    mine = await upload_file(device_a)
    answer = await call_gateway("GET", "/v1/files", headers=file_headers(device_b))
    assert (answer.status, listed_ids(answer.body), orjson.loads(answer.body)["has_more"]) == (200, [], False)
    listed_by_a = await call_gateway("GET", "/v1/files", headers=file_headers(device_a))
    assert listed_ids(listed_by_a.body) == [mine]


async def test_device_b_reading_device_a_s_file_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    file_id = await upload_file(device_a)
    body = await refused_without_forwarding(
        fake_upstream, "GET", f"/v1/files/{file_id}", device_b, headers=file_headers(device_b)
    )
    assert body["error"]["message"] == f"File not found: {file_id}"


async def test_device_b_downloading_device_a_s_file_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    file_id = await upload_file(device_a)
    await refused_without_forwarding(
        fake_upstream, "GET", f"/v1/files/{file_id}/content", device_b, headers=file_headers(device_b)
    )


async def test_device_b_deleting_device_a_s_file_gets_404(fake_upstream, two_devices):
    device_a, device_b = two_devices
    file_id = await upload_file(device_a)
    await refused_without_forwarding(fake_upstream, "DELETE", f"/v1/files/{file_id}", device_b, headers=file_headers(device_b))
    assert (await call_gateway("GET", f"/v1/files/{file_id}", headers=file_headers(device_a))).status == 200


async def test_an_id_that_exists_nowhere_gets_the_same_404(fake_upstream, two_devices):
    _, device_b = two_devices
    await refused_without_forwarding(fake_upstream, "GET", "/v1/messages/batches/msgbatch_01nonexistent", device_b)


async def test_the_owner_reads_cancels_fetches_and_deletes_its_own_batch(fake_upstream, two_devices):
    device_a, _ = two_devices
    batch = await create_batch(device_a)
    canceled = await call_gateway("POST", f"/v1/messages/batches/{batch}/cancel", headers=bearer(device_a))
    read = await call_gateway("GET", f"/v1/messages/batches/{batch}", headers=bearer(device_a))
    results = await call_gateway("GET", f"/v1/messages/batches/{batch}/results", headers=bearer(device_a))
    deleted = await call_gateway("DELETE", f"/v1/messages/batches/{batch}", headers=bearer(device_a))
    assert (canceled.status, read.status, results.status, deleted.status) == (200, 200, 200, 200)
    assert orjson.loads(read.body)["processing_status"] == "ended"
    assert [orjson.loads(line)["result"]["type"] for line in results.body.splitlines()] == ["canceled"]
    assert orjson.loads(deleted.body) == {"id": batch, "type": "message_batch_deleted"}
    await refused_without_forwarding(fake_upstream, "GET", f"/v1/messages/batches/{batch}", device_a)


async def test_the_owner_downloads_and_deletes_its_own_file(fake_upstream, two_devices):
    device_a, _ = two_devices
    file_id = await upload_file(device_a, b"the owner's bytes")
    downloaded = await call_gateway("GET", f"/v1/files/{file_id}/content", headers=file_headers(device_a))
    deleted = await call_gateway("DELETE", f"/v1/files/{file_id}", headers=file_headers(device_a))
    assert (downloaded.status, downloaded.body) == (200, b"the owner's bytes")
    assert (deleted.status, orjson.loads(deleted.body)) == (200, {"id": file_id, "type": "file_deleted"})
    listed = await call_gateway("GET", "/v1/files", headers=file_headers(device_a))
    assert listed_ids(listed.body) == []


async def test_resources_created_before_ownership_belong_to_no_device(fake_upstream, two_devices):
    device_a, _ = two_devices
    async with httpx.AsyncClient(
        base_url=fake_upstream.base_url, headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
    ) as upstream:
        created = await upstream.post("/v1/messages/batches", content=batch_body(), headers={"content-type": "application/json"})
    old_batch = created.json()["id"]
    listed = await call_gateway("GET", "/v1/messages/batches", headers=bearer(device_a))
    assert (listed.status, listed_ids(listed.body)) == (200, [])
    await refused_without_forwarding(fake_upstream, "GET", f"/v1/messages/batches/{old_batch}", device_a)
    await refused_without_forwarding(fake_upstream, "DELETE", f"/v1/messages/batches/{old_batch}", device_a)


def test_ownership_recorded_on_one_gateway_holds_on_the_other(two_gateways):
    fake, first, second = two_gateways
    device_a, device_b = enroll(first), enroll(second)

    def call(server, method: str, path: str, token: str, body: bytes = b"") -> httpx.Response:
        return httpx.request(
            method,
            server.url + path,
            content=body,
            timeout=10,
            headers={"authorization": f"Bearer {token}", "content-type": "application/json", "anthropic-version": "2023-06-01"},
        )

    created = call(first, "POST", "/v1/messages/batches", device_a, batch_body())
    batch = created.json()["id"]
    forwarded = len(fake.requests)
    refused = [
        call(second, method, path, device_b).status_code
        for method, path in (
            ("GET", f"/v1/messages/batches/{batch}"),
            ("GET", f"/v1/messages/batches/{batch}/results"),
            ("POST", f"/v1/messages/batches/{batch}/cancel"),
            ("DELETE", f"/v1/messages/batches/{batch}"),
        )
    ]
    assert refused == [404, 404, 404, 404]
    assert len(fake.requests) == forwarded
    assert call(second, "GET", "/v1/messages/batches", device_b).json()["data"] == []
    assert call(second, "GET", f"/v1/messages/batches/{batch}", device_a).status_code == 200
    assert [item["id"] for item in call(second, "GET", "/v1/messages/batches", device_a).json()["data"]] == [batch]


@pytest.fixture
def count_queries(monkeypatch):
    """SQL statements run by any thread but the usage writer's and the price refresher's (both run on
    their own clock; the request before the count loads the price table): the proxy's queries run in
    asgiref's thread, out of reach of django_assert_num_queries."""
    import threading

    from django.db.backends import utils

    executed: list[str] = []
    original = utils.CursorWrapper.execute

    def counted(self, sql, params=None):
        if not threading.current_thread().name.startswith(("usage-writer", "usage-prices")):
            executed.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(utils.CursorWrapper, "execute", counted)
    return executed


async def test_messages_and_a_cached_owner_read_make_no_query_a_stranger_read_makes_one(
    fake_upstream, two_devices, count_queries
):
    device_a, device_b = two_devices
    batch = await create_batch(device_a)
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(device_b), body=MESSAGE)).status == 200
    count_queries.clear()
    assert (await call_gateway("POST", "/v1/messages", headers=bearer(device_a), body=MESSAGE)).status == 200
    assert (await call_gateway("GET", f"/v1/messages/batches/{batch}", headers=bearer(device_a))).status == 200
    assert count_queries == []
    assert (await call_gateway("GET", f"/v1/messages/batches/{batch}", headers=bearer(device_b))).status == 404
    assert len(count_queries) == 1
