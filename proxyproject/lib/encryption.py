"""Secrets at rest (signing keys here, upstream API keys in the gateway): Fernet, authenticated.

The key comes from FIELD_ENCRYPTION_KEY, else is derived from DJANGO_SECRET_KEY. FIELD_ENCRYPTION_KEY
may list several comma-separated keys: the first encrypts, every one decrypts, so an operator can
rotate it by prepending a new key and re-saving (`MultiFernet`). Each entry may be a Fernet key
(urlsafe base64 of 32 bytes) or any other high-entropy string, which is stretched with HKDF.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class SecretDecryptionFailed(Exception):
    """The stored value was not encrypted with any configured key (FIELD_ENCRYPTION_KEY or
    DJANGO_SECRET_KEY changed since), or it was tampered with."""


def _derive_fernet_key(material: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"llm-gateway field encryption v1")
    derived = hkdf.derive(material.encode())
    return base64.urlsafe_b64encode(derived)


def _as_fernet_key(entry: str) -> bytes:
    try:
        if len(base64.urlsafe_b64decode(entry.encode())) == 32:
            return entry.encode()
    except (binascii.Error, ValueError):
        pass
    return _derive_fernet_key(entry)


@lru_cache(maxsize=4)
def _cipher(field_key_setting: str, secret_key: str) -> MultiFernet:
    entries = [entry.strip() for entry in field_key_setting.split(",") if entry.strip()]
    keys = [_as_fernet_key(entry) for entry in entries] or [_derive_fernet_key(secret_key)]
    return MultiFernet([Fernet(key) for key in keys])


def _current_cipher() -> MultiFernet:
    return _cipher(settings.FIELD_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt_secret(plaintext: str) -> str:
    return _current_cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _current_cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionFailed(
            "A stored secret cannot be decrypted: FIELD_ENCRYPTION_KEY (or DJANGO_SECRET_KEY) changed. "
            "List the old key after the new one in FIELD_ENCRYPTION_KEY."
        ) from None
