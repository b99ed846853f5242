"""manage.py revoke_device / revoke_token / revoke_org / rotate_signing_key, and the token purge task."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from proxyproject.lib.errors import DeviceBlocked, TokenRevoked
from tests.tokens.client import bootstrap, jwt_parts
from tokens.authentication import authenticate_wrapper_token
from tokens.models import AuditEvent, AuditKind, Device, DeviceStatus, IssuedToken, Organization, Person
from tokens.tasks import purge_expired_tokens

pytestmark = pytest.mark.django_db

authenticate = async_to_sync(authenticate_wrapper_token)


def _run(*args, answer: str | None = None, monkeypatch=None) -> str:
    if answer is not None:
        monkeypatch.setattr("builtins.input", lambda prompt: answer)
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_block_person_cuts_every_device_and_unblock_person_lets_them_sign_in_again():
    person = Person.objects.create(issuer="https://id.example", subject="alice-0001", email="alice@example.com")
    for device_id in ("laptop-alice", "desktop-alice"):
        bootstrap(Client(), device_id)
    Device.objects.filter(device_id__endswith="-alice").update(person=person)
    assert _run("block_person", "ALICE@example.com", "--yes").endswith(
        "Blocked alice@example.com: 4 tokens of 2 devices revoked.\n"
    )
    assert Person.objects.get(pk=person.pk).blocked
    assert _run("unblock_person", "alice@example.com", "--yes") == "Unblock 'alice@example.com'.\nUnblocked alice@example.com.\n"
    assert list(AuditEvent.objects.filter(person=person).values_list("kind", "actor").order_by("occurred_at", "id")) == [
        (AuditKind.PERSON_BLOCKED, "command:block_person"),
        (AuditKind.PERSON_UNBLOCKED, "command:unblock_person"),
    ]


def test_block_person_names_an_unknown_email():
    with pytest.raises(CommandError, match="No person with the email 'nobody@example.com'."):
        _run("block_person", "nobody@example.com", "--yes")


def test_revoke_device_with_yes_revokes_and_says_what_it_did(enrolled):
    output = _run("revoke_device", "laptop-ada", "--yes")
    assert output == (
        "Revoke all tokens of device 'laptop-ada' (active, 2 unrevoked tokens).\nRevoked 2 tokens of device 'laptop-ada'.\n"
    )
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])
    assert AuditEvent.objects.get(kind=AuditKind.DEVICE_REVOKED).actor == "command:revoke_device"


def test_revoke_device_asks_and_does_nothing_unless_confirmed(enrolled, monkeypatch):
    with pytest.raises(CommandError, match="Aborted"):
        _run("revoke_device", "laptop-ada", answer="no", monkeypatch=monkeypatch)
    assert IssuedToken.objects.filter(revoked_at__isnull=False).count() == 0
    assert authenticate(enrolled["wrapper_token"]).device_id == "laptop-ada"


def test_revoke_device_acts_on_a_typed_yes(enrolled, monkeypatch):
    _run("revoke_device", "laptop-ada", answer="yes", monkeypatch=monkeypatch)
    assert IssuedToken.objects.filter(revoked_at__isnull=True).count() == 0


def test_revoke_device_with_block_blocks_it(enrolled):
    _run("revoke_device", "laptop-ada", "--block", "--yes")
    assert Device.objects.get(device_id="laptop-ada").status == DeviceStatus.BLOCKED
    with pytest.raises(DeviceBlocked):
        authenticate(enrolled["wrapper_token"])


def test_revoke_device_names_an_unknown_device():
    with pytest.raises(CommandError, match="No device with device_id 'nope'"):
        _run("revoke_device", "nope", "--yes")


def test_revoke_token_revokes_the_token_with_its_grant_and_nothing_else(client, enrolled):
    other = bootstrap(client, "laptop-bob").json()
    jti = jwt_parts(enrolled["wrapper_token"])[1]["jti"]
    _run("revoke_token", jti, "--yes")
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])
    assert IssuedToken.objects.get(jti=jwt_parts(enrolled["refresh_token"])[1]["jti"]).revoked_at is not None
    assert authenticate(other["wrapper_token"]).device_id == "laptop-bob"


def test_revoke_org_revokes_every_device_of_the_organization(client, acme):
    organization = acme
    for device_id in ("a-1", "a-2"):
        Device.objects.create(device_id=device_id, organization=organization)
    tokens = [bootstrap(client, device_id).json()["wrapper_token"] for device_id in ("a-1", "a-2")]
    output = _run("revoke_org", "Acme", "--yes")
    assert output.endswith("Revoked 4 tokens of 2 devices.\n")
    for token in tokens:
        with pytest.raises(TokenRevoked):
            authenticate(token)


def test_purge_task_drops_rows_expired_for_over_a_week(enrolled):
    IssuedToken.objects.filter(kind="access").update(expires_at=timezone.now() - dt.timedelta(days=8))
    assert purge_expired_tokens() == 1
    assert list(IssuedToken.objects.values_list("kind", flat=True)) == ["refresh"]


def test_revoke_device_in_bulk_from_a_file_prints_a_table(enrolled, tmp_path):
    from django.test import Client

    other = Client().post("/bootstrap", {"device_id": "desktop-bob", "app_version": "1.0"}, content_type="application/json")
    assert other.status_code == 200
    ids = tmp_path / "ids.txt"
    ids.write_text("# devices to revoke\nlaptop-ada\ndesktop-bob\n")
    output = _run("revoke_device", "--from-file", str(ids), "--yes")
    assert output.splitlines() == [
        "Revoke all tokens of 2 devices (4 unrevoked tokens).",
        "device       status  tokens revoked",
        "-----------  ------  --------------",
        "laptop-ada   active               2",
        "desktop-bob  active               2",
        "2 devices done, 4 tokens revoked.",
    ]
    assert IssuedToken.objects.filter(revoked_at__isnull=True).count() == 0


def test_revoke_device_names_unknown_devices_and_changes_nothing(enrolled):
    with pytest.raises(CommandError, match="No device with device_id 'ghost'; nothing was changed."):
        _run("revoke_device", "laptop-ada", "ghost", "--yes")
    assert IssuedToken.objects.filter(revoked_at__isnull=False).count() == 0


def test_list_devices_prints_the_fleet_as_a_table(enrolled):
    from tokens.models import Device

    Device.objects.filter(device_id="laptop-ada").update(daily_spend_cap_usd="5.00")
    lines = _run("list_devices").splitlines()
    assert lines[0].split() == ["device", "status", "organization", "version", "last", "seen", "(UTC)", "today/cap", "month/cap"]
    ada = next(line for line in lines if line.startswith("laptop-ada"))
    assert ada.split()[1] == "active"
    assert ada.split()[-2:] == ["$0.00/$5.00", "$0.00/-"]


def test_create_operator_key_prints_the_secret_of_a_key_scoped_to_the_named_organization(acme):
    import hashlib

    from tokens.models import OperatorApiKey

    secret = _run("create_operator_key", "acme-ops", "--org", "Acme").strip()
    key = OperatorApiKey.objects.get(secret_sha256=hashlib.sha256(secret.encode()).hexdigest())
    assert (key.name, key.organization) == ("acme-ops", acme)
    with pytest.raises(CommandError, match="No organization named 'Globex'"):
        _run("create_operator_key", "globex-ops", "--org", "Globex")
    platform = _run("create_operator_key", "platform-ops").strip()
    assert OperatorApiKey.objects.get(secret_sha256=hashlib.sha256(platform.encode()).hexdigest()).organization is None


def test_block_device_refuses_the_device_until_unblock_device_lets_it_enroll_again(
    client, enrolled, django_capture_on_commit_callbacks
):
    from tests.tokens.client import bootstrap

    with django_capture_on_commit_callbacks(execute=True):
        assert _run("block_device", "laptop-ada", "--yes").endswith("Device 'laptop-ada' blocked and its tokens revoked.\n")
    with pytest.raises(DeviceBlocked):
        authenticate(enrolled["wrapper_token"])
    assert bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        assert _run("unblock_device", "laptop-ada", "--yes").endswith("Unblocked 1 device.\n")
    assert Device.objects.get(device_id="laptop-ada").status == DeviceStatus.ACTIVE
    assert AuditEvent.objects.filter(kind=AuditKind.DEVICE_UNBLOCKED, actor="command:unblock_device").count() == 1
    with pytest.raises(TokenRevoked):
        authenticate(enrolled["wrapper_token"])
    assert bootstrap(client, "laptop-ada", device_secret=enrolled["device_secret"]).status_code == 200


def test_unblock_device_refuses_a_device_that_is_not_blocked(enrolled):
    with pytest.raises(CommandError, match="Not blocked: 'laptop-ada'"):
        _run("unblock_device", "laptop-ada", "--yes")


def test_list_and_revoke_operator_keys_by_name_never_show_a_secret():
    from tokens.models import OperatorApiKey
    from tokens.operators import create_operator_api_key

    acme = Organization.objects.create(name="Acme")
    _, secret = create_operator_api_key(name="grafana", created_by=None)
    create_operator_api_key(name="acme-ops", created_by=None, organization=acme)
    listing = _run("list_operator_keys")
    assert "grafana" in listing and "platform" in listing and "Acme" in listing
    assert secret not in listing
    assert _run("revoke_operator_key", "grafana", "--yes").endswith("Revoked operator API key 'grafana'.\n")
    assert OperatorApiKey.objects.get(name="grafana").revoked_at is not None
    assert "grafana" not in _run("list_operator_keys") and "grafana" in _run("list_operator_keys", "--all")
    with pytest.raises(CommandError, match="No unrevoked operator API key"):
        _run("revoke_operator_key", "grafana", "--yes")
