"""The real Claude Code (the pinned `@anthropic-ai/claude-code` npm package) with the settings
`proxyclient setup claude-code` writes, run from another directory, through the gateway to the
bundled fake upstream: the issue's "Invalid API key" case, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.proxyclient.conftest import FAKE_UPSTREAM_KEY, run
from tests.support import poll_until
from usage.models import UsageRecord

NPM_PROJECT = Path(__file__).parent / "claude-code"
CLAUDE = NPM_PROJECT / "node_modules" / ".bin" / "claude"


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
