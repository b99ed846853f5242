"""Operator API keys do not reach /v1; an operator sees an organization's batches and files in the
admin, read-only, filtered by organization."""

from __future__ import annotations

import pytest

from gateway.models import OwnedResource, OwnedResourceKind
from tokens.models import Device, Organization


@pytest.mark.django_db
def test_an_operator_sees_one_organizations_resources_and_cannot_change_them(admin_client):
    ours, theirs = Organization.objects.create(name="ours"), Organization.objects.create(name="theirs")
    for org, resource_id in ((ours, "msgbatch_ours"), (theirs, "msgbatch_theirs")):
        device = Device.objects.create(device_id=f"dev-{org.name}", organization=org)
        OwnedResource.objects.create(
            kind=OwnedResourceKind.MESSAGE_BATCH, resource_id=resource_id, device=device, organization=org
        )
    page = admin_client.get(f"/admin/gateway/ownedresource/?organization__id__exact={ours.pk}")
    assert page.status_code == 200
    assert (b"msgbatch_ours" in page.content, b"msgbatch_theirs" in page.content) == (True, False)
    row = OwnedResource.objects.get(resource_id="msgbatch_ours")
    assert admin_client.post(f"/admin/gateway/ownedresource/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert OwnedResource.objects.count() == 2
