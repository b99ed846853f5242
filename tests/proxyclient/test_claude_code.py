"""The real Claude Code (the pinned `@anthropic-ai/claude-code` npm package) with the settings
`proxyclient setup claude-code` writes, run from another directory, through the gateway to the
bundled fake upstream: the issue's "Invalid API key" case, end to end; and Claude Code waiting on
its apiKeyHelper while the person signs in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.oidc_provider import OIDCProvider
from tests.proxyclient.conftest import FAKE_UPSTREAM_KEY, gateway_to, run
from tests.servers import ServerProcess
from tests.support import poll_until
from tokens.models import AuditEvent, AuditKind, Device
from usage.models import UsageRecord

NPM_PROJECT = Path(__file__).parent / "claude-code"
CLAUDE = NPM_PROJECT / "node_modules" / ".bin" / "claude"
APPROVAL_DELAY_SECONDS = 4


@pytest.fixture(scope="module")
def claude() -> Path:
    """The pinned Claude Code, installed with `npm ci` if it is not yet (`.ci/run` installs it)."""
    if not CLAUDE.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot install @anthropic-ai/claude-code")
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NPM_PROJECT, capture_output=True, text=True, timeout=600, check=False
        )
        if installed.returncode != 0 or not CLAUDE.exists():
            pytest.skip(f"@anthropic-ai/claude-code could not be installed with npm ci: {installed.stderr[-500:]}")
    return CLAUDE


def test_claude_code_answers_through_the_gateway_with_the_written_settings(claude, fresh_venv, gateway, upstream, tmp_path):
    home, project, state = tmp_path / "home", tmp_path / "some-project", tmp_path / "state"
    home.mkdir(), project.mkdir()
    environment = {"PATH": os.environ["PATH"], "HOME": str(home)}
    setup = run(
        [
            str(fresh_venv / "bin" / "proxyclient"),
            "--bootstrap-url",
            f"{gateway.url}/bootstrap",
            "--home",
            str(state),
            "--no-keyring",
            "setup",
            "claude-code",
        ],
        env=environment,
        cwd=tmp_path,
    )
    assert (setup.returncode, setup.stderr) == (0, ""), setup.stdout
    settings = json.loads((home / ".claude" / "settings.json").read_text())
    assert settings["apiKeyHelper"].startswith(str(fresh_venv / "bin" / "proxyclient") + " ")

    answered = run(
        [str(claude), "-p", "Say hello to the gateway test", "--output-format", "json"],
        env=environment | {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"},
        cwd=project,
    )
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    result = json.loads(answered.stdout)
    assert result["is_error"] is False
    assert result["result"].startswith("Hello! This is the fake Anthropic API")
    messages = [request for request in upstream.requests if request.path.startswith("/v1/messages")]
    assert messages and {request.api_key_used for request in messages} == {FAKE_UPSTREAM_KEY[-4:]}
    device_id = (state / "device_id").read_text().strip()
    poll_until(
        lambda: UsageRecord.objects.filter(device_ref=device_id, endpoint="/v1/messages", status=200).exists(),
        15,
        "the usage record of the request",
    )


@pytest.fixture
def sign_in_gateway(django_db_setup, transactional_db, package_upstream) -> Iterator[tuple[ServerProcess, OIDCProvider]]:
    """A gateway that enrolls devices only by their person's sign-in, to the fake upstream."""
    provider = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    provider.interval = 1
    servers = gateway_to(
        package_upstream,
        ENROLLMENT_MODE="oidc",
        PEOPLE_OIDC_ISSUER=provider.issuer,
        PEOPLE_OIDC_CLIENT_ID=provider.client_id,
        PEOPLE_OIDC_CLIENT_SECRET=provider.client_secret,
    )
    yield next(servers), provider
    next(servers, None)
    provider.stop()


def test_claude_code_waits_for_a_sign_in_through_its_api_key_helper(claude, fresh_venv, sign_in_gateway, upstream, tmp_path):
    """Claude Code's first request runs `proxyclient token`, which needs a sign-in: it opens the
    "browser" (BROWSER, as Python's webbrowser reads it), the person approves a few seconds later, and
    the helper prints the token while Claude Code is still waiting (it would wait 10 minutes)."""
    gateway, provider = sign_in_gateway
    home, project, state = tmp_path / "home", tmp_path / "some-project", tmp_path / "state"
    home.mkdir(), project.mkdir(), (home / ".claude").mkdir()
    opened = tmp_path / "opened-url"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    helper = f"{fresh_venv / 'bin' / 'proxyclient'} --bootstrap-url {gateway.url}/bootstrap --home {state} --no-keyring token"
    (home / ".claude" / "settings.json").write_text(
        json.dumps({"apiKeyHelper": helper, "env": {"ANTHROPIC_BASE_URL": gateway.url}})
    )

    def person_approves_a_few_seconds_after_the_browser_opened() -> None:
        poll_until(opened.exists, 60, "the browser opened by the helper")
        time.sleep(APPROVAL_DELAY_SECONDS)  # the person reading the page and clicking: the scenario, not a wait for state
        assert httpx.get(opened.read_text()).status_code == 200

    approver = threading.Thread(target=person_approves_a_few_seconds_after_the_browser_opened)
    approver.start()
    environment = {"PATH": os.environ["PATH"], "HOME": str(home), "BROWSER": f"{browser} %s"}
    answered = run(
        [str(claude), "-p", "Say hello to the gateway test", "--output-format", "json"],
        env=environment | {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"},
        cwd=project,
    )
    approver.join(timeout=120)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    assert json.loads(answered.stdout)["result"].startswith("Hello! This is the fake Anthropic API")
    device = Device.objects.select_related("person").get(device_id=(state / "device_id").read_text().strip())
    assert device.person.email == "alice@example.com"
    assert AuditEvent.objects.filter(kind=AuditKind.PERSON_SIGNED_IN, device=device).count() == 1
    assert [r for r in upstream.requests if r.path.startswith("/v1/messages")]
