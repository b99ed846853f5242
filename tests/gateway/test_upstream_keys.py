"""manage.py add_upstream_key / rotate_upstream_key / retire_upstream_key / list_upstream_keys, the
secret at rest, and the pool seeded from ANTHROPIC_API_KEY."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.management import CommandError, call_command

from fake_anthropic import FakeAnthropic
from gateway.models import UpstreamKey, UpstreamKeyState
from gateway.upstream_keys import ENVIRONMENT_KEY_NAME, add_upstream_key, secret_digest, seed_environment_key
from proxyproject.lib.console import format_table
from proxyproject.lib.encryption import decrypt_secret

pytestmark = pytest.mark.django_db

FIRST = "sk-ant-api03-first-" + "f" * 30 + "F1R5"
SECOND = "sk-ant-api03-second-" + "s" * 30 + "S3C0"
THIRD = "sk-ant-api03-third-" + "t" * 30 + "TH1R"


@pytest.fixture(autouse=True)
def upstream(settings):
    """The commands check a key with the upstream before it serves: the fake knows this file's keys."""
    with FakeAnthropic(api_keys={FIRST, SECOND, THIRD}) as fake:
        settings.ANTHROPIC_BASE_URL = fake.base_url
        yield fake


def run(*args: str, stdin: str | None = None, answer: str | None = None, monkeypatch=None) -> str:
    if answer is not None:
        monkeypatch.setattr("builtins.input", lambda prompt: answer)
    out = io.StringIO()
    options = {"stdout": out}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command(*args, **options)
    return out.getvalue()


def test_add_takes_the_secret_from_stdin_and_stores_it_encrypted(caplog):
    caplog.set_level(logging.INFO)
    output = run("add_upstream_key", "prod-1", "--weight", "3", stdin=FIRST + "\n")
    assert output == "Added upstream key 'prod-1' (…F1R5, weight 3): active.\n"
    key = UpstreamKey.objects.get()
    assert (key.name, key.state, key.weight, key.secret_last4) == ("prod-1", "active", 3, "F1R5")
    assert key.created_by == "command:add_upstream_key"
    assert FIRST not in key.encrypted_secret and decrypt_secret(key.encrypted_secret) == FIRST
    assert key.secret_sha256 == secret_digest(FIRST)
    assert FIRST not in caplog.text and "Upstream key audit: added" in caplog.text


def test_add_takes_the_secret_from_a_named_environment_variable(monkeypatch):
    monkeypatch.setenv("NEW_UPSTREAM_KEY", FIRST)
    output = run("add_upstream_key", "prod-1", "--from-env", "NEW_UPSTREAM_KEY")
    assert output == "Added upstream key 'prod-1' (…F1R5, weight 1): active.\n"
    assert decrypt_secret(UpstreamKey.objects.get(name="prod-1").encrypted_secret) == FIRST


def test_a_secret_cannot_be_passed_as_an_argument():
    with pytest.raises(CommandError, match="unrecognized arguments"):
        run("add_upstream_key", "prod-1", FIRST)
    assert not UpstreamKey.objects.exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("prod-1",), "", "No secret on standard input"),
        (("prod-1", "--from-env", "UNSET_VARIABLE_FOR_TEST"), None, "variable UNSET_VARIABLE_FOR_TEST is not set or empty"),
        (("prod-1",), "sk-ant has spaces in it", "The secret contains spaces"),
        (("prod-1",), "short", "shorter than 8 characters"),
        (("bad name!",), FIRST, "Invalid key name 'bad name!'"),
        (("prod-1", "--weight", "0"), FIRST, "Weight 0 is out of range: use 1 to 1000."),
    ],
)
def test_add_refuses_a_missing_or_malformed_input(args, stdin, message):
    with pytest.raises(CommandError, match=message):
        run("add_upstream_key", *args, stdin=stdin)
    assert not UpstreamKey.objects.exists()


def test_add_refuses_a_name_or_a_secret_the_pool_holds_already():
    run("add_upstream_key", "prod-1", stdin=FIRST)
    with pytest.raises(CommandError, match="An upstream key named 'prod-1' exists already."):
        run("add_upstream_key", "prod-1", stdin=SECOND)
    with pytest.raises(CommandError, match=r"This secret is already in the pool as 'prod-1' \(active\)."):
        run("add_upstream_key", "prod-2", stdin=FIRST)
    assert UpstreamKey.objects.count() == 1


def test_rotate_makes_the_new_key_active_and_the_old_one_drain():
    run("add_upstream_key", "prod-1", "--weight", "4", stdin=FIRST)
    output = run("rotate_upstream_key", "prod-1", "--new-name", "prod-2", stdin=SECOND)
    assert output == (
        "Upstream key 'prod-2' (…S3C0) is active.\n"
        "Key 'prod-1' (…F1R5) is draining: requests in flight finish on it, new ones use 'prod-2'. "
        "It is retired once idle (at the latest after the drain grace period); revoke it at Anthropic after that.\n"
    )
    old, new = UpstreamKey.objects.get(name="prod-1"), UpstreamKey.objects.get(name="prod-2")
    assert (old.state, old.replaced_by_id, old.draining_since is not None) == ("draining", new.pk, True)
    assert (new.state, new.weight, decrypt_secret(new.encrypted_secret)) == ("active", 4, SECOND)


def test_rotate_names_the_new_key_after_the_old_one_and_the_date():
    run("add_upstream_key", "prod-20250101", stdin=FIRST)
    run("rotate_upstream_key", "prod-20250101", stdin=SECOND)
    [new] = UpstreamKey.objects.filter(state=UpstreamKeyState.ACTIVE)
    today = new.created_at.strftime("%Y%m%d")
    assert new.name == f"prod-{today}"


def test_rotate_refuses_an_unknown_or_draining_key():
    with pytest.raises(CommandError, match="No upstream key named 'ghost'. See: manage.py list_upstream_keys"):
        run("rotate_upstream_key", "ghost", stdin=SECOND)
    run("add_upstream_key", "prod-1", stdin=FIRST)
    run("rotate_upstream_key", "prod-1", "--new-name", "prod-2", stdin=SECOND)
    with pytest.raises(CommandError, match="Key 'prod-1' is draining: only an active key can be rotated."):
        run("rotate_upstream_key", "prod-1", stdin=THIRD)
    assert UpstreamKey.objects.count() == 2


def test_retire_with_yes_wipes_the_secret_and_keeps_its_digest():
    run("add_upstream_key", "prod-1", stdin=FIRST)
    run("add_upstream_key", "prod-2", stdin=SECOND)
    output = run("retire_upstream_key", "prod-1", "--yes")
    in_flight = "0" if _redis() else "unknown without Redis"
    assert output == (
        f"Retire upstream key 'prod-1' (…F1R5, active, in flight: {in_flight}).\n"
        "Upstream key 'prod-1' retired; its secret is wiped. Revoke it at Anthropic too.\n"
    )
    key = UpstreamKey.objects.get(name="prod-1")
    assert (key.state, key.encrypted_secret, key.secret_sha256) == ("retired", "", secret_digest(FIRST))
    assert key.retired_at is not None
    with pytest.raises(CommandError, match=r"This secret is already in the pool as 'prod-1' \(retired\)."):
        run("add_upstream_key", "prod-1-again", stdin=FIRST)


def _redis() -> bool:
    from django.conf import settings

    return bool(settings.REDIS_URL)


def test_retire_asks_first_and_does_nothing_unless_confirmed(monkeypatch):
    run("add_upstream_key", "prod-1", stdin=FIRST)
    run("add_upstream_key", "prod-2", stdin=SECOND)
    with pytest.raises(CommandError, match="Aborted: nothing was changed."):
        run("retire_upstream_key", "prod-1", answer="no", monkeypatch=monkeypatch)
    assert UpstreamKey.objects.get(name="prod-1").state == UpstreamKeyState.ACTIVE


def test_retire_refuses_the_last_usable_key_unless_forced():
    run("add_upstream_key", "prod-1", stdin=FIRST)
    with pytest.raises(CommandError, match="Key 'prod-1' is the last usable key: retiring it would refuse every request."):
        run("retire_upstream_key", "prod-1", "--yes")
    assert UpstreamKey.objects.get().state == UpstreamKeyState.ACTIVE
    run("retire_upstream_key", "prod-1", "--yes", "--force")
    assert UpstreamKey.objects.get().state == UpstreamKeyState.RETIRED


def test_retire_names_an_unknown_key():
    with pytest.raises(CommandError, match="No upstream key named 'ghost'."):
        run("retire_upstream_key", "ghost", "--yes")


def test_list_shows_keys_masked_with_their_state_and_counters():
    first = add_upstream_key(name="prod-1", secret=FIRST, weight=2, actor="test")
    add_upstream_key(name="prod-2", secret=SECOND, actor="test")
    UpstreamKey.objects.filter(pk=first.pk).update(
        request_count=12, rejected_count=1, rate_limited_count=2, server_error_count=3, connection_failure_count=4
    )
    run("retire_upstream_key", "prod-2", "--yes")
    output = run("list_upstream_keys")
    in_flight = 0 if _redis() else "-"
    headers = (
        "name",
        "key",
        "state",
        "weight",
        "in flight",
        "age (days)",
        "last used",
        "requests",
        "401/403",
        "429",
        "5xx",
        "conn",
        "flagged",
    )
    table = format_table(headers, [("prod-1", "…F1R5", "active", 2, in_flight, 0, "never", 12, 1, 2, 3, 4, "")])
    footer = "" if _redis() else "In-flight counts need Redis (REDIS_URL); each process only knows its own.\n"
    assert output == table + "\n" + footer
    assert FIRST not in output and "prod-2" not in output
    assert "prod-2" in run("list_upstream_keys", "--all")


def test_the_environment_key_seeds_an_empty_pool_once():
    first = seed_environment_key(FIRST)
    assert seed_environment_key(FIRST) is None and seed_environment_key(FIRST + "\n") is None
    assert (first.name, first.from_environment, first.state) == (ENVIRONMENT_KEY_NAME, True, "active")
    assert first.created_by == "environment"
    assert UpstreamKey.objects.count() == 1


def test_a_new_environment_key_takes_over_and_the_previous_one_drains():
    previous = seed_environment_key(FIRST)
    operator_key = add_upstream_key(name="prod-ops", secret="sk-ant-api03-operator-" + "o" * 30 + "OPS1", actor="test")
    current = seed_environment_key(SECOND)
    previous.refresh_from_db()
    operator_key.refresh_from_db()
    assert (current.name, current.state) == (f"{ENVIRONMENT_KEY_NAME}-2", "active")
    assert (previous.state, previous.replaced_by_id) == ("draining", current.pk)
    assert operator_key.state == "active"


def test_a_retired_environment_key_left_in_the_environment_never_comes_back():
    seed_environment_key(FIRST)
    add_upstream_key(name="prod-2", secret=SECOND, actor="test")
    run("retire_upstream_key", ENVIRONMENT_KEY_NAME, "--yes")
    assert seed_environment_key(FIRST) is None
    states = list(UpstreamKey.objects.values_list("name", "state").order_by("name"))
    assert states == [(ENVIRONMENT_KEY_NAME, "retired"), ("prod-2", "active")]


def test_add_refuses_a_key_the_upstream_refuses():
    unknown = "sk-ant-api03-unknown-" + "u" * 30 + "UNKN"
    with pytest.raises(CommandError, match=r"Key not added: the upstream refused the key \(GET /v1/models: 401\)"):
        run("add_upstream_key", "prod-1", stdin=unknown)
    assert not UpstreamKey.objects.exists()


def test_add_refuses_when_the_upstream_cannot_be_asked_unless_told_not_to_verify(settings):
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(CommandError, match="did not answer .*--no-verify"):
        run("add_upstream_key", "prod-1", stdin=FIRST)
    output = run("add_upstream_key", "prod-1", "--no-verify", stdin=FIRST)
    assert output == "Added upstream key 'prod-1' (…F1R5, weight 1): active.\n"


def test_rotate_checks_the_new_key_and_keeps_the_old_one_when_refused():
    run("add_upstream_key", "prod-1", stdin=FIRST)
    with pytest.raises(CommandError, match="Key not added: the upstream refused the key"):
        run("rotate_upstream_key", "prod-1", stdin="sk-ant-api03-unknown-" + "u" * 30 + "UNKN")
    assert list(UpstreamKey.objects.values_list("name", "state")) == [("prod-1", "active")]
