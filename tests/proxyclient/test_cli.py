"""`python -m proxyclient token | env | status` as Claude Code and a shell run them."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from proxyclient import __version__
from proxyclient.cli import main
from proxyclient.description import host_device_name, operating_system
from tests.proxyclient.conftest import audit_kinds
from tests.servers import BASE_DIR, free_port
from tokens.models import AuditKind, Device
from tokens.revocation import block_device, revoke_device_tokens


def cli_environment(server_url: str, home) -> dict[str, str]:
    return {
        "ENABLE_PROXY": "true",
        "PROXY_BOOTSTRAP_URL": f"{server_url}/bootstrap",
        "PROXYCLIENT_HOME": str(home),
        "PROXYCLIENT_KEYRING": "off",
    }


def run_cli(argv: list[str], environ: dict[str, str], **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, environ=environ, stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def empty_working_directory(tmp_path, monkeypatch):
    """The CLI reads .env from the working directory; the repository's must not leak in."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def test_token_prints_only_the_token_and_reuses_it(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path / "home") | {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "0"}
    command = [sys.executable, "-m", "proxyclient", "token"]
    subprocess_env = environ | {"PYTHONPATH": str(BASE_DIR / "clients" / "python"), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(command, env=subprocess_env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert (first.returncode, first.stderr) == (0, "")
    token = first.stdout.removesuffix("\n")
    assert first.stdout == token + "\n" and token.count(".") == 2 and "\n" not in token
    code, out, err = run_cli(["token"], environ)
    assert (code, out, err) == (0, token + "\n", "")
    device_id = (tmp_path / "home" / "device_id").read_text().strip()
    assert audit_kinds(device_id) == [AuditKind.BOOTSTRAP]
    device = Device.objects.get(device_id=device_id)
    assert (device.app_name, device.app_version, device.device_name) == ("proxyclient", __version__, host_device_name())
    assert device.os == operating_system() and device.os


def test_token_asked_again_within_the_helper_ttl_renews_a_revoked_token(gateway, tmp_path):
    """Claude Code re-runs its apiKeyHelper early only after a 401."""
    environ = cli_environment(gateway.url, tmp_path)
    revoked = run_cli(["token"], environ)[1].strip()
    device = Device.objects.get(device_id=(tmp_path / "device_id").read_text().strip())
    revoke_device_tokens(device=device, actor="test")
    code, out, err = run_cli(["token"], environ)
    assert (code, err) == (0, "")
    assert out.strip() != revoked
    assert audit_kinds(device.device_id) == [AuditKind.BOOTSTRAP, AuditKind.DEVICE_REVOKED, AuditKind.BOOTSTRAP]


def test_token_asked_again_after_the_helper_ttl_is_the_cached_one(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path) | {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "60000"}
    first = run_cli(["token"], environ)[1]
    assert run_cli(["token"], environ, clock=lambda: time.time() + 61)[1] == first


def test_env_prints_base_url_and_auth_token_lines(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path)
    code, out, err = run_cli(["env"], environ)
    token = run_cli(["token"], environ)[1].strip()
    assert (code, err) == (0, "")
    assert out == f"ANTHROPIC_BASE_URL={gateway.url}\nANTHROPIC_AUTH_TOKEN={token}\n"


def labelled(out: str) -> dict[str, str]:
    """`status` lines by label."""
    return {line[:9].rstrip().removesuffix(":"): line[9:] for line in out.splitlines()}


def test_status_offline_shows_the_local_view_without_the_network(tmp_path):
    environ = cli_environment(f"http://127.0.0.1:{free_port()}", tmp_path)
    code, out, err = run_cli(["status", "--offline"], environ)
    device_id = (tmp_path / "device_id").read_text().strip()
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"device:  {device_id}",
        f"state:   {tmp_path}",
        f"gateway: {environ['PROXY_BOOTSTRAP_URL']}",
        "proxy:   (not enrolled yet: run `proxyclient token`)",
        "token:   none",
        "refresh: none",
    ]


def test_status_asks_the_gateway_for_status_policy_and_spend(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path)
    run_cli(["--device-name", "ada-laptop", "--app-name", "Scribe", "token"], environ)
    device = Device.objects.get(device_id=(tmp_path / "device_id").read_text().strip())
    device.allowed_models, device.daily_spend_cap_usd, device.tokens_per_minute = "claude-haiku-*", Decimal("2.50"), 0
    device.save()
    code, out, err = run_cli(["status"], environ)
    lines = labelled(out)
    assert (code, err) == (0, "")
    assert lines["proxy"] == gateway.url
    assert lines["token"].startswith("valid until ") and lines["token"].endswith("(in 24 h 00 min)")
    assert lines["status"] == f"active (ada-laptop, Scribe, {operating_system()})"
    assert (lines["org"], lines["models"]) == ("none", "claude-haiku-*")
    assert lines["limits"] == "100000 requests per 60 s, no token limit"
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert lines["today"] == f"$0.0000 of $2.50 cap, resets {tomorrow}T00:00:00.000Z"
    assert lines["month"].startswith("$0.0000 (no cap), resets ")
    assert lines["health"] == f"ok ({gateway.url}/healthz)"


def test_status_of_a_blocked_device_exits_4(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path)
    run_cli(["token"], environ)
    block_device(device=Device.objects.get(device_id=(tmp_path / "device_id").read_text().strip()), actor="test")
    code, out, err = run_cli(["status"], environ)
    assert (code, err) == (4, "")
    assert labelled(out)["status"].startswith("REFUSED or FAILED: The gateway refused to report this device's status: ")
    assert "(device_blocked, HTTP 403)" in labelled(out)["status"]


def test_gateway_down_exits_3_with_what_to_do(tmp_path):
    code, out, err = run_cli(["token"], cli_environment(f"http://127.0.0.1:{free_port()}", tmp_path))
    assert (code, out) == (3, "")
    message, hint = err.splitlines()
    assert message.startswith("proxyclient: Cannot reach the gateway at http://127.0.0.1:")
    assert hint.startswith("What to do: Check that the gateway is running (curl its /healthz)")


def test_proxy_mode_off_exits_2(tmp_path):
    code, out, err = run_cli(["token"], cli_environment("http://127.0.0.1:9", tmp_path) | {"ENABLE_PROXY": "false"})
    assert (code, out) == (2, "")
    assert err == (
        "proxyclient: Proxy mode is off.\n"
        "What to do: Set ENABLE_PROXY=true in the environment or in .env to route through the gateway.\n"
    )


def test_blocked_device_exits_4(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path)
    run_cli(["token"], environ)
    device = Device.objects.get(device_id=(tmp_path / "device_id").read_text().strip())
    block_device(device=device, actor="test")
    code, out, err = run_cli(["token"], environ)
    assert (code, out) == (4, "")
    assert "(device_blocked, HTTP 403)" in err


def test_clock_skew_fails_status_with_exit_5_while_token_still_works(gateway, tmp_path):
    environ = cli_environment(gateway.url, tmp_path)
    late = lambda: time.time() - 3 * 3600  # noqa: E731
    code, out, err = run_cli(["token"], environ, clock=late)
    assert (code, err) == (0, "")
    code, out, err = run_cli(["status"], environ, clock=late)
    assert code == 5
    assert labelled(out)["token"].endswith("(in 24 h 00 min)")
    assert labelled(out)["health"].startswith("FAILED: This computer's clock is 3 h 00 min behind the gateway's")
    assert labelled(out)["health"].endswith(
        "Turn on automatic date and time (network time) in your system settings, then try again."
    )


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as usage:
        main(["frobnicate"], environ={}, stderr=io.StringIO())
    assert usage.value.code == 2
