"""An organization's operator key sees its organization's batches and files and nothing else:
another organization's resource is a 404 as if it did not exist (nothing fetched upstream), a
cursor from elsewhere is refused, the platform-wide endpoints refuse the key, and deleting the
organization deletes the key rather than widening it."""

from __future__ import annotations

import orjson
import pytest
from asgiref.sync import sync_to_async

from gateway.models import OwnedResource
from tests.gateway.conftest import bearer, call_gateway, fake_upstream, fresh_breaker_and_pool  # noqa: F401  (the gateway tests' fixtures)
from tests.security.owned import create_batch, upload_file
from tests.support import enroll_device
from tokens.models import OperatorApiKey, Organization
from tokens.operators import create_operator_api_key

pytestmark = pytest.mark.django_db(transaction=True)


def operator(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}", "anthropic-version": "2023-06-01"}


def _tenants() -> dict[str, object]:
    acme, globex = Organization.objects.create(name="Acme"), Organization.objects.create(name="Globex")
    return {
        "acme": acme,
        "globex": globex,
        "acme_key": create_operator_api_key(name="acme-ops", created_by=None, organization=acme)[1],
        "platform_key": create_operator_api_key(name="platform-ops", created_by=None)[1],
    }


@pytest.fixture
async def tenants(fake_upstream):
    """Acme and Globex, a device and a batch each, an Acme-scoped key and a platform key."""
    found = await sync_to_async(_tenants)()
    acme_device = await enroll_device(organization=found["acme"])
    globex_device = await enroll_device(organization=found["globex"])
    return {
        **found,
        "acme_batch": await create_batch(acme_device),
        "globex_batch": await create_batch(globex_device),
        "globex_device": globex_device,
    }


def listed(answer) -> list[str]:
    assert answer.status == 200, answer.body
    return [item["id"] for item in orjson.loads(answer.body)["data"]]


async def test_an_organization_key_lists_only_its_organization_s_resources(tenants):
    scoped = await call_gateway("GET", "/admin/resources", headers=operator(tenants["acme_key"]))
    platform = await call_gateway("GET", "/admin/resources", headers=operator(tenants["platform_key"]))
    assert listed(scoped) == [tenants["acme_batch"]]
    assert set(listed(platform)) == {tenants["acme_batch"], tenants["globex_batch"]}


async def test_an_organization_key_reads_its_own_batch_with_its_upstream_state(tenants, fake_upstream):
    batch = tenants["acme_batch"]
    answer = await call_gateway("GET", f"/admin/resources/message_batch/{batch}", headers=operator(tenants["acme_key"]))
    assert answer.status == 200, answer.body
    body = orjson.loads(answer.body)
    assert (body["id"], body["kind"], body["organization"], body["upstream"]["id"]) == (
        batch,
        "message_batch",
        tenants["acme"].pk,
        batch,
    )
    fetched = [seen for seen in fake_upstream.requests if seen.path == f"/v1/messages/batches/{batch}"]
    assert len(fetched) == 1


async def test_an_organization_key_reading_another_organization_s_batch_gets_404_and_nothing_upstream(tenants, fake_upstream):
    before = len(fake_upstream.requests)
    batch = tenants["globex_batch"]
    answer = await call_gateway("GET", f"/admin/resources/message_batch/{batch}", headers=operator(tenants["acme_key"]))
    assert answer.status == 404
    assert orjson.loads(answer.body)["error"]["message"] == f"message_batch {batch} not found"
    assert len(fake_upstream.requests) == before


async def test_an_organization_key_reading_another_organization_s_file_gets_404(tenants):
    globex_file = await upload_file(tenants["globex_device"])
    answer = await call_gateway("GET", f"/admin/resources/file/{globex_file}", headers=operator(tenants["acme_key"]))
    assert answer.status == 404


async def test_an_organization_key_paging_from_another_organization_s_cursor_is_refused(tenants):
    answer = await call_gateway(
        "GET", "/admin/resources", headers=operator(tenants["acme_key"]), query=f"after_id={tenants['globex_batch']}".encode()
    )
    assert answer.status == 400
    assert orjson.loads(answer.body)["error"]["type"] == "invalid_request_error"


async def test_an_organization_key_naming_another_organization_s_device_lists_nothing(tenants):
    globex_owner = await sync_to_async(lambda: OwnedResource.objects.get(resource_id=tenants["globex_batch"]).device.device_id)()
    answer = await call_gateway(
        "GET", "/admin/resources", headers=operator(tenants["acme_key"]), query=f"device={globex_owner}".encode()
    )
    assert listed(answer) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/circuit-breaker"),
        ("POST", "/admin/circuit-breaker/reset"),
        ("GET", "/metrics"),
    ],
)
async def test_an_organization_key_is_refused_on_platform_wide_endpoints(tenants, method, path):
    answer = await call_gateway(method, path, headers=operator(tenants["acme_key"]))
    assert answer.status == 403
    assert orjson.loads(answer.body)["error"]["type"] == "permission_error"


async def test_a_device_token_on_the_operator_resource_list_gets_401(tenants, fake_upstream):
    device = await enroll_device()
    answer = await call_gateway("GET", "/admin/resources", headers=bearer(device))
    assert answer.status == 401


async def test_deleting_an_organization_deletes_its_keys_instead_of_widening_them(tenants):
    await sync_to_async(tenants["acme"].delete)()
    assert not await sync_to_async(OperatorApiKey.objects.filter(name="acme-ops").exists)()
    answer = await call_gateway("GET", "/admin/resources", headers=operator(tenants["acme_key"]))
    assert answer.status == 401
