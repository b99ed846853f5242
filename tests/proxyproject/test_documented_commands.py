"""Every command the README and the runbook show in a shell block runs as written, in document
order, as a subprocess against this test's database: an operator who copies them gets what the
comment beside each promises, not a traceback. Also: a configuration or database problem is one
line naming the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from fake_anthropic import FakeAnthropic
from tests.servers import server_environment
from tests.tokens.client import bootstrap
from tokens.models import Device, Organization, Person

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "runbook.md")
_BLOCK = re.compile(r"^\s*```bash\n(.*?)^\s*```", re.DOTALL | re.MULTILINE)


def documented_commands() -> list[str]:
    """`make manage` lines of the documents' bash blocks, without their trailing comments."""
    commands = []
    for document in DOCUMENTS:
        for block in _BLOCK.findall(document.read_text()):
            for line in block.splitlines():
                command = re.sub(r"\s+#.*$", "", line.strip())
                if command.startswith("make manage"):
                    commands.append(command)
    return commands


UPSTREAM_KEYS = {
    "NEW_KEY": "sk-ant-api03-" + "n" * 40,
    "NEXT_KEY": "sk-ant-api03-" + "x" * 40,
    "ROTATED_KEY": "sk-ant-api03-" + "r" * 40,
}


@pytest.fixture
def documented_world(client):
    """What the examples name: device laptop-ada, organization Acme, the operator login, and an
    upstream that accepts the keys the examples add (the commands check them first)."""
    assert bootstrap(client, "laptop-ada").status_code == 200
    acme = Organization.objects.create(name="Acme")
    Device.objects.filter(device_id="laptop-ada").update(organization=acme)
    Person.objects.create(issuer="https://id.example", subject="alice-0001", email="alice@example.com")
    get_user_model().objects.create_superuser("operator", password="correct horse battery staple")
    with FakeAnthropic(api_keys=UPSTREAM_KEYS.values()) as upstream:
        yield server_environment(DJANGO_DEBUG="true", ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL=upstream.base_url, **UPSTREAM_KEYS)


def test_the_documents_show_the_commands_an_operator_needs():
    shown = " ".join(documented_commands())
    for command in (
        "revoke_device",
        "block_device",
        "unblock_device",
        "block_person",
        "unblock_person",
        "create_operator_key",
        "revoke_operator_key",
        "add_upstream_key",
        "rotate_upstream_key",
        "rotate_signing_key",
        "unlock_login",
    ):
        assert command in shown, command


def test_every_documented_command_runs_as_written(documented_world):
    for command in documented_commands():
        done = subprocess.run(
            command,
            shell=True,
            cwd=ROOT,
            env=documented_world,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, command


def test_a_missing_production_secret_is_one_line_naming_the_fix():
    env = server_environment(DJANGO_DEBUG="false", JWT_SECRET="", DJANGO_SECRET_KEY="")
    done = subprocess.run(
        [sys.executable, "manage.py", "list_devices"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith("manage.py: configuration: JWT_SECRET is missing")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 2


def test_an_unmigrated_database_is_one_line_naming_the_fix(tmp_path):
    env = server_environment(DJANGO_DEBUG="true", DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    done = subprocess.run(
        [sys.executable, "manage.py", "list_devices"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith("manage.py: database: no such table")
    assert "make migrate" in done.stderr and "Traceback" not in done.stderr
