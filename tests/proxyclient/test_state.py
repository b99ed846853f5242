"""The encrypted state directory: stable device id, private key file or OS keyring, and caches
that are discarded when tampered with or written for another device or gateway."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proxyclient import ProxyConfig, StateUnavailable, TokenGrant
from proxyclient.keystore import KEY_FILE, KEYRING_MARKER, KEYRING_SERVICE
from proxyclient.state import DEVICE_ID_FILE, DEVICE_SECRET_FILE, TOKENS_FILE, StateStore

GRANT = TokenGrant(
    wrapper_token="wrapper.jwt.value",
    refresh_token="refresh.jwt.value",
    proxy_base_url="http://gw.example.com",
    expires_at=2_000_000_000.0,
    refresh_expires_at=2_100_000_000.0,
    received_at=1_999_913_600.0,
)


def config(state_dir: Path, bootstrap_url: str = "http://gw.example.com/bootstrap") -> ProxyConfig:
    return ProxyConfig(app_version="1.0", bootstrap_url=bootstrap_url, state_dir=state_dir, use_keyring=False)


class MemoryKeyring:
    def __init__(self) -> None:
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service_name: str, username: str) -> str | None:
        return self.passwords.get((service_name, username))

    def set_password(self, service_name: str, username: str, password: str) -> None:
        self.passwords[(service_name, username)] = password


class LockedKeyring(MemoryKeyring):
    def get_password(self, service_name: str, username: str) -> str | None:
        raise RuntimeError("the keyring is locked")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_id_is_generated_once_and_kept(tmp_path):
    first = StateStore(config(tmp_path), keyring=None)
    second = StateStore(config(tmp_path), keyring=None)
    assert first.device_id == second.device_id == (tmp_path / DEVICE_ID_FILE).read_text().strip()
    assert len(first.device_id) == 36


def test_files_are_private_and_hold_no_plaintext_secrets(tmp_path):
    store = StateStore(config(tmp_path), keyring=None)
    secret = store.load_device_secret()
    store.save_tokens(GRANT)
    assert len(secret) == 43
    assert mode(tmp_path) == 0o700
    for name in (KEY_FILE, DEVICE_SECRET_FILE, TOKENS_FILE):
        assert mode(tmp_path / name) == 0o600
    assert secret.encode() not in (tmp_path / DEVICE_SECRET_FILE).read_bytes()
    assert b"wrapper.jwt.value" not in (tmp_path / TOKENS_FILE).read_bytes()
    assert StateStore(config(tmp_path), keyring=None).load_device_secret() == secret


def test_tokens_round_trip(tmp_path):
    store = StateStore(config(tmp_path), keyring=None)
    store.save_tokens(GRANT)
    assert StateStore(config(tmp_path), keyring=None).load_tokens() == GRANT


def test_tampered_cache_is_discarded(tmp_path):
    store = StateStore(config(tmp_path), keyring=None)
    store.save_tokens(GRANT)
    sealed = bytearray((tmp_path / TOKENS_FILE).read_bytes())
    sealed[20] ^= 0x80
    (tmp_path / TOKENS_FILE).write_bytes(bytes(sealed))
    assert store.load_tokens() is None
    assert not (tmp_path / TOKENS_FILE).exists()


def test_truncated_or_garbage_cache_is_discarded(tmp_path):
    store = StateStore(config(tmp_path), keyring=None)
    (tmp_path / TOKENS_FILE).write_bytes(b"PXC1short")
    assert store.load_tokens() is None
    (tmp_path / TOKENS_FILE).write_bytes(b'{"wrapper_token": "plain json"}')
    assert store.load_tokens() is None


def test_cache_written_for_another_gateway_is_discarded(tmp_path):
    StateStore(config(tmp_path, "http://gw-a.example.com/bootstrap"), keyring=None).save_tokens(GRANT)
    assert StateStore(config(tmp_path, "http://gw-b.example.com/bootstrap"), keyring=None).load_tokens() is None


def test_cache_written_for_another_device_is_discarded(tmp_path):
    store = StateStore(config(tmp_path), keyring=None)
    store.save_tokens(GRANT)
    (tmp_path / DEVICE_ID_FILE).write_text("another-device\n")
    assert StateStore(config(tmp_path), keyring=None).load_tokens() is None


def test_key_file_readable_by_others_is_made_private(tmp_path):
    StateStore(config(tmp_path), keyring=None).save_tokens(GRANT)
    (tmp_path / KEY_FILE).chmod(0o644)
    assert StateStore(config(tmp_path), keyring=None).load_tokens() == GRANT
    assert mode(tmp_path / KEY_FILE) == 0o600


def test_keyring_holds_the_key_when_available(tmp_path):
    keyring = MemoryKeyring()
    StateStore(config(tmp_path), keyring=keyring).save_tokens(GRANT)
    assert not (tmp_path / KEY_FILE).exists()
    assert [service for service, _ in keyring.passwords] == [KEYRING_SERVICE]
    assert StateStore(config(tmp_path), keyring=keyring).load_tokens() == GRANT
    assert StateStore(config(tmp_path), keyring=MemoryKeyring()).load_tokens() is None


def test_locked_keyring_is_reported_instead_of_replaced(tmp_path):
    StateStore(config(tmp_path), keyring=MemoryKeyring())
    assert (tmp_path / KEYRING_MARKER).exists()
    with pytest.raises(StateUnavailable) as locked:
        StateStore(config(tmp_path), keyring=LockedKeyring())
    assert str(locked.value) == (
        "The OS keyring refused access to this client's key (the keyring is locked). "
        "Unlock the keyring and try again, or set PROXYCLIENT_KEYRING=off on a machine without one."
    )
    with pytest.raises(StateUnavailable):
        StateStore(config(tmp_path), keyring=None)
