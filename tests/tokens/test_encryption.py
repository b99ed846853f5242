"""encrypt_secret / decrypt_secret: what the signing keys and the upstream key pool store."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from proxyproject.lib.encryption import SecretDecryptionFailed, decrypt_secret, encrypt_secret


def test_round_trip_without_the_plaintext_in_the_stored_value(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    stored = encrypt_secret("sk-ant-api03-secret")
    assert "sk-ant-api03-secret" not in stored
    assert encrypt_secret("sk-ant-api03-secret") != stored
    assert decrypt_secret(stored) == "sk-ant-api03-secret"


def test_default_key_is_derived_from_the_secret_key(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    stored = encrypt_secret("value")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    with pytest.raises(SecretDecryptionFailed):
        decrypt_secret(stored)


@pytest.mark.parametrize(
    "field_key",
    [Fernet.generate_key().decode(), "a passphrase-like key of decent length 123"],
    ids=["fernet-key", "passphrase"],
)
def test_field_encryption_key_is_used_when_set(settings, field_key):
    settings.FIELD_ENCRYPTION_KEY = field_key
    stored = encrypt_secret("value")
    settings.FIELD_ENCRYPTION_KEY = ""
    with pytest.raises(SecretDecryptionFailed):
        decrypt_secret(stored)
    settings.FIELD_ENCRYPTION_KEY = field_key
    assert decrypt_secret(stored) == "value"


def test_key_rotation_keeps_old_values_readable(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    stored_with_old = encrypt_secret("value")
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    assert decrypt_secret(stored_with_old) == "value"
    stored_with_new = encrypt_secret("value")
    settings.FIELD_ENCRYPTION_KEY = new
    assert decrypt_secret(stored_with_new) == "value"


def test_tampered_value_is_refused(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    stored = encrypt_secret("value")
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(SecretDecryptionFailed):
        decrypt_secret(tampered)
