"""Configuration from the seed's variables, a .env in the working directory, the real environment winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyclient import ConfigurationError, load_config
from proxyclient.config import default_state_dir


def test_dotenv_in_the_working_directory_configures_the_client(tmp_path):
    (tmp_path / ".env").write_text(
        "# desktop app\nENABLE_PROXY=true\nexport PROXY_BOOTSTRAP_URL='https://gw.example.com/bootstrap'\n"
        'PROXY_HEALTH_URL="https://gw.example.com/healthz"  \nPROXYCLIENT_HOME=/tmp/pc-home # for tests\n'
    )
    config = load_config("1.2.3", environ={}, cwd=tmp_path)
    assert (config.enabled, config.bootstrap_url, config.health_url) == (
        True,
        "https://gw.example.com/bootstrap",
        "https://gw.example.com/healthz",
    )
    assert config.state_dir == Path("/tmp/pc-home")
    assert config.app_version == "1.2.3"


def test_real_environment_wins_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("ENABLE_PROXY=true\nPROXY_BOOTSTRAP_URL=http://from-dotenv:3001/bootstrap\n")
    config = load_config(
        "1.0", environ={"ENABLE_PROXY": "false", "PROXY_BOOTSTRAP_URL": "http://from-env:3001/bootstrap"}, cwd=tmp_path
    )
    assert (config.enabled, config.bootstrap_url) == (False, "http://from-env:3001/bootstrap")


def test_defaults_are_the_seeds_local_gateway_with_proxy_mode_off(tmp_path):
    config = load_config("1.0", environ={}, cwd=tmp_path)
    assert (config.enabled, config.bootstrap_url, config.health_url) == (
        False,
        "http://localhost:3001/bootstrap",
        "http://localhost:3001/healthz",
    )
    assert (config.check_interval, config.refresh_margin) == (1800, 3600)
    with pytest.raises(ConfigurationError) as off:
        config.require_enabled()
    assert (
        str(off.value) == "Proxy mode is off. Set ENABLE_PROXY=true in the environment or in .env to route through the gateway."
    )


def test_health_url_follows_a_gateway_mounted_under_a_prefix(tmp_path):
    config = load_config("1.0", environ={"PROXY_BOOTSTRAP_URL": "https://corp.example.com/llm/bootstrap"}, cwd=tmp_path)
    assert config.health_url == "https://corp.example.com/llm/healthz"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENABLE_PROXY": "maybe"}, "ENABLE_PROXY='maybe' is not a boolean. Use ENABLE_PROXY=true or ENABLE_PROXY=false."),
        (
            {"PROXY_BOOTSTRAP_URL": "localhost:3001/bootstrap"},
            "PROXY_BOOTSTRAP_URL='localhost:3001/bootstrap' is not an http(s) URL. "
            "Set PROXY_BOOTSTRAP_URL like http://localhost:3001/bootstrap.",
        ),
    ],
)
def test_bad_values_say_what_to_set(tmp_path, environ, message):
    with pytest.raises(ConfigurationError) as bad:
        load_config("1.0", environ=environ, cwd=tmp_path)
    assert str(bad.value) == message
    assert bad.value.exit_code == 2


def test_keyring_can_be_turned_off_for_headless_machines(tmp_path):
    assert load_config("1.0", environ={"PROXYCLIENT_KEYRING": "off"}, cwd=tmp_path).use_keyring is False
    assert load_config("1.0", environ={}, cwd=tmp_path).use_keyring is True


def test_state_lives_in_the_users_config_directory(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "proxyclient"
