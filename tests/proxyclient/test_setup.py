"""`proxyclient setup claude-code` and `setup env`: settings merged without losing keys, the helper
by absolute path, the TTL matched to the token's lifetime, models chosen when the allowlist needs."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from tests.proxyclient.test_cli import cli_environment, run_cli
from tokens.models import Device

HELPER_TTL_MS = str(30 * 60 * 1000)  # half the hour before expiry in which `token` renews


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    workdir = tmp_path / "project"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return home


def expected_helper(gateway_url: str, state) -> str:
    return shlex.join(
        [
            sys.executable,
            "-m",
            "proxyclient",
            "--bootstrap-url",
            f"{gateway_url}/bootstrap",
            "--home",
            str(state),
            "--no-keyring",
            "token",
        ]
    )


def test_setup_claude_code_merges_into_existing_user_settings(gateway, home, tmp_path):
    settings_file = home / ".claude" / "settings.json"
    settings_file.parent.mkdir()
    settings_file.write_text(
        json.dumps(
            {
                "permissions": {"allow": ["Bash(ls:*)"]},
                "apiKeyHelper": "old-helper",
                "env": {"DISABLE_TELEMETRY": "1"},
            }
        )
    )
    environ = cli_environment(gateway.url, tmp_path / "state") | {"PROXYCLIENT_KEYRING": "off"}
    code, out, err = run_cli(["--no-keyring", "setup", "claude-code"], environ)
    assert (code, err) == (0, "")
    assert json.loads(settings_file.read_text()) == {
        "permissions": {"allow": ["Bash(ls:*)"]},
        "apiKeyHelper": expected_helper(gateway.url, tmp_path / "state"),
        "env": {"DISABLE_TELEMETRY": "1", "ANTHROPIC_BASE_URL": gateway.url, "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": HELPER_TTL_MS},
    }
    assert (
        out == f"Wrote {settings_file}: Claude Code now gets its key from `{expected_helper(gateway.url, tmp_path / 'state')}`.\n"
    )


def test_setup_claude_code_dry_run_prints_and_writes_nothing(gateway, home, tmp_path):
    code, out, _ = run_cli(
        ["--no-keyring", "setup", "claude-code", "--scope", "project", "--dry-run"], cli_environment(gateway.url, tmp_path / "s")
    )
    header, _, body = out.partition("\n")
    assert code == 0 and header == f"# would write {tmp_path / 'project' / '.claude' / 'settings.json'}"
    assert json.loads(body)["env"]["ANTHROPIC_BASE_URL"] == gateway.url
    assert not (tmp_path / "project" / ".claude").exists() and not (home / ".claude").exists()


def test_setup_claude_code_picks_allowed_models_when_the_allowlist_excludes_the_defaults(gateway, home, tmp_path):
    environ = cli_environment(gateway.url, tmp_path / "state")
    run_cli(["token"], environ)
    Device.objects.filter(device_id=(tmp_path / "state" / "device_id").read_text().strip()).update(
        allowed_models="claude-haiku-*"
    )
    code, _, err = run_cli(["--no-keyring", "setup", "claude-code", "--scope", "local"], environ)
    settings = json.loads((tmp_path / "project" / ".claude" / "settings.local.json").read_text())
    assert (code, err) == (0, "")
    # The newest haiku the gateway lists for the main model; the default small model is a haiku, allowed.
    assert settings["env"]["ANTHROPIC_MODEL"] == "claude-haiku-5-5"
    assert "ANTHROPIC_SMALL_FAST_MODEL" not in settings["env"]


def test_setup_claude_code_refuses_to_overwrite_a_broken_settings_file(gateway, home, tmp_path):
    settings_file = home / ".claude" / "settings.json"
    settings_file.parent.mkdir()
    settings_file.write_text("{ not json")
    code, out, err = run_cli(["setup", "claude-code"], cli_environment(gateway.url, tmp_path / "state"))
    assert (code, out) == (2, "")
    assert err.startswith(f"proxyclient: {settings_file} is not valid JSON")
    assert settings_file.read_text() == "{ not json"


def test_setup_env_prints_shell_exports(gateway, home, tmp_path):
    environ = cli_environment(gateway.url, tmp_path / "state")
    code, out, err = run_cli(["setup", "env"], environ)
    comment, base_url, token = out.splitlines()
    assert (code, err) == (0, "")
    assert comment.startswith("# proxyclient ") and "the token is valid until" in comment
    assert base_url == f"export ANTHROPIC_BASE_URL={gateway.url}"
    assert (
        token
        == f"export ANTHROPIC_AUTH_TOKEN={run_cli(['token'], environ | {'CLAUDE_CODE_API_KEY_HELPER_TTL_MS': '0'})[1].strip()}"
    )


def test_a_sonnet_only_allowlist_overrides_claude_code_s_opus_default_and_a_full_one_sets_nothing():
    from proxyclient.claude_code import model_overrides

    available = ["claude-opus-4-8", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"]
    assert model_overrides(["claude-sonnet-*"], available) == {
        "ANTHROPIC_MODEL": "claude-sonnet-4-5-20250929",
        "ANTHROPIC_SMALL_FAST_MODEL": "claude-sonnet-4-5-20250929",
    }
    assert model_overrides(["claude-opus-*", "claude-sonnet-*", "claude-haiku-*"], available) == {}
