"""The key that encrypts the client's state at rest: kept in the OS keyring when one is available,
else in a file only this user can read.

Which of the two holds it is decided once per state directory and then kept: an existing key file
always wins, and a marker file records that the keyring holds the key, so a keyring that is locked
later is reported (StateUnavailable) instead of silently replaced by a new key, which would
orphan the device secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StateUnavailable

KEY_FILE = "state.key"
KEYRING_MARKER = "state.key.in-keyring"
KEYRING_SERVICE = "proxyclient"
KEY_BITS = 256

log = logging.getLogger("proxyclient")


class KeyringBackend(Protocol):
    """The part of the `keyring` package this module uses (tests pass an in-memory one)."""

    def get_password(self, service_name: str, username: str) -> str | None: ...

    def set_password(self, service_name: str, username: str, password: str) -> None: ...


def system_keyring() -> KeyringBackend | None:
    """The `keyring` module when it is installed and has a real backend (not the fail/null ones,
    whose priority is not positive), else None."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        priority = keyring.get_keyring().priority
    except Exception as exc:  # a broken keyring configuration must not stop the app: use the key file
        log.warning("proxyclient.keyring_unusable: %s", exc)
        return None
    return keyring if priority > 0 else None


def load_or_create_key(state_dir: Path, keyring: KeyringBackend | None) -> bytes:
    """Call with the state lock held (two processes must not both create a key)."""
    key_file = state_dir / KEY_FILE
    if key_file.exists():
        return read_key_file(key_file)
    marker = state_dir / KEYRING_MARKER
    if marker.exists() or keyring is not None:
        return keyring_key(state_dir, keyring, marker)
    return create_key_file(key_file)


def keyring_key(state_dir: Path, keyring: KeyringBackend | None, marker: Path) -> bytes:
    if keyring is None:
        raise StateUnavailable(
            "The key of this client's encrypted state is in the OS keyring, which is not available now.",
            hint="Install and unlock the keyring (pip install keyring), or delete the state directory to enroll again.",
        )
    username = f"state-key:{state_dir.resolve()}"
    try:
        stored = keyring.get_password(KEYRING_SERVICE, username)
        key = decode_key(stored) if stored else None
        if key is None:
            key = AESGCM.generate_key(bit_length=KEY_BITS)
            keyring.set_password(KEYRING_SERVICE, username, base64.b64encode(key).decode())
    except Exception as exc:  # keyring backends raise their own error types (locked, denied, dbus down)
        raise StateUnavailable(
            f"The OS keyring refused access to this client's key ({exc}).",
            hint="Unlock the keyring and try again, or set PROXYCLIENT_KEYRING=off on a machine without one.",
        ) from exc
    marker.touch(mode=0o600, exist_ok=True)
    return key


def create_key_file(key_file: Path) -> bytes:
    key = AESGCM.generate_key(bit_length=KEY_BITS)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(key))
    return key


def read_key_file(key_file: Path) -> bytes:
    """A key file others can read is tightened to 0600 (a copy or a permissive umask did it)."""
    if os.name != "nt":
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:
            log.warning("proxyclient.key_file_permissions_fixed: %s was %o, now 600", key_file, mode)
            key_file.chmod(0o600)
    key = decode_key(key_file.read_text(encoding="ascii", errors="replace"))
    if key is None:
        log.warning("proxyclient.key_file_corrupt: %s replaced; the encrypted state is lost", key_file)
        key_file.unlink()
        return create_key_file(key_file)
    return key


def decode_key(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) * 8 == KEY_BITS else None
