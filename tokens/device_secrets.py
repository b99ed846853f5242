"""Device secrets: what proves a re-bootstrap comes from the device that enrolled, not from someone
who merely knows its device id.

Secrets are high-entropy (generated: 256 bits; client-chosen: at least MIN_LENGTH characters), so a
plain SHA-256 is enough to store them safely and keeps every bootstrap cheap; a slow password hash
would only hand an attacker a CPU-exhaustion lever on an unauthenticated endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

MIN_LENGTH = 32
MAX_LENGTH = 256
_SCHEME = "sha256"


def generate_device_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_device_secret(secret: str) -> str:
    return f"{_SCHEME}${hashlib.sha256(secret.encode()).hexdigest()}"


def device_secret_matches(secret: str | None, stored_hash: str) -> bool:
    if not secret or not stored_hash:
        return False
    return hmac.compare_digest(hash_device_secret(secret), stored_hash)
