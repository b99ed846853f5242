"""What the client keeps between launches, in its state directory:

    device_id          the stable device id (not secret), generated on first launch
    device_secret.enc  the secret that proves this is the same device when it bootstraps again
    tokens.enc         the current wrapper/refresh token pair
    state.key          the AES-GCM key (or the OS keyring holds it; see keystore.py)

Encrypted files are AES-256-GCM with the file's purpose, the device id and (for tokens) the
gateway's bootstrap URL as associated data: a tampered file, or one written for another device or
another gateway, fails authentication and is discarded, and the client bootstraps again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import ProxyConfig
from .grant import TokenGrant
from .keystore import KeyringBackend, load_or_create_key
from .locking import state_lock

DEVICE_ID_FILE = "device_id"
DEVICE_SECRET_FILE = "device_secret.enc"
TOKENS_FILE = "tokens.enc"
SEALED_PREFIX = b"PXC1"
NONCE_BYTES = 12
DEVICE_SECRET_BYTES = 32  # token_urlsafe(32): 43 characters, above the gateway's 32-character minimum
MAX_DEVICE_ID_CHARS = 128

log = logging.getLogger("proxyclient")


class StateStore:
    """The state directory of one client configuration. Reads and writes that must not interleave
    with another process's (renewals) happen under `state_lock`, which callers hold."""

    def __init__(self, config: ProxyConfig, *, keyring: KeyringBackend | None) -> None:
        self.directory = config.state_dir
        self._tokens_context = f"|{config.bootstrap_url}".encode()
        with state_lock(self.directory):
            self._aead = AESGCM(load_or_create_key(self.directory, keyring))
            self.device_id = self._load_or_create_device_id()

    def load_device_secret(self) -> str:
        """The stored device secret; a new one (stored) on first launch or when the file is unreadable,
        in which case the gateway, knowing the old one, refuses with device_secret_invalid."""
        path = self.directory / DEVICE_SECRET_FILE
        sealed = read_bytes(path)
        if sealed is not None:
            try:
                return self._unseal(sealed, b"device-secret").decode()
            except (InvalidTag, ValueError, UnicodeDecodeError):
                log.warning("proxyclient.device_secret_unreadable: %s replaced with a new secret", path)
        secret = secrets.token_urlsafe(DEVICE_SECRET_BYTES)
        self.save_device_secret(secret)
        return secret

    def save_device_secret(self, secret: str) -> None:
        write_private(self.directory / DEVICE_SECRET_FILE, self._seal(secret.encode(), b"device-secret"))

    def load_tokens(self) -> TokenGrant | None:
        """The cached grant, or None when there is none or it cannot be trusted (then it is deleted)."""
        path = self.directory / TOKENS_FILE
        sealed = read_bytes(path)
        if sealed is None:
            return None
        try:
            return TokenGrant.from_dict(json.loads(self._unseal(sealed, b"tokens" + self._tokens_context)))
        except (InvalidTag, ValueError, TypeError) as exc:
            log.warning("proxyclient.token_cache_discarded: %s is corrupt or foreign (%s)", path, type(exc).__name__)
            path.unlink(missing_ok=True)
            return None

    def save_tokens(self, grant: TokenGrant) -> None:
        payload = json.dumps(grant.to_dict(), separators=(",", ":")).encode()
        write_private(self.directory / TOKENS_FILE, self._seal(payload, b"tokens" + self._tokens_context))

    def _seal(self, plaintext: bytes, purpose: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_PREFIX + nonce + self._aead.encrypt(nonce, plaintext, self._associated_data(purpose))

    def _unseal(self, sealed: bytes, purpose: bytes) -> bytes:
        if not sealed.startswith(SEALED_PREFIX) or len(sealed) < len(SEALED_PREFIX) + NONCE_BYTES + 16:
            raise ValueError("not a sealed proxyclient file")
        nonce = sealed[len(SEALED_PREFIX) : len(SEALED_PREFIX) + NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[len(SEALED_PREFIX) + NONCE_BYTES :], self._associated_data(purpose))

    def _associated_data(self, purpose: bytes) -> bytes:
        return b"proxyclient/1|" + purpose + b"|" + self.device_id.encode()

    def _load_or_create_device_id(self) -> str:
        path = self.directory / DEVICE_ID_FILE
        stored = read_bytes(path)
        if stored is not None:
            device_id = stored.decode("utf-8", errors="replace").strip()
            if is_valid_device_id(device_id):
                return device_id
            log.warning("proxyclient.device_id_invalid: %s replaced; this machine enrolls as a new device", path)
        device_id = str(uuid.uuid4())
        write_private(path, device_id.encode() + b"\n")
        return device_id


def is_valid_device_id(device_id: str) -> bool:
    return 0 < len(device_id) <= MAX_DEVICE_ID_CHARS and device_id.isprintable()


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_private(path: Path, content: bytes) -> None:
    """Write atomically (a crash leaves the old file or the new one) with mode 0600."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
