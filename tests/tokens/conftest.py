"""Fixtures for the tokens tests: each test gets its own Redis key space and empty in-process caches,
and enrollment limits high enough that only the test about them meets them."""
from __future__ import annotations

import uuid

import pytest
from django.test import Client

from tests.tokens.client import bootstrap
from tokens.device_state import forget_device_states
from tokens.signing_keys import forget_keyring


@pytest.fixture(autouse=True)
def isolated_token_state(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000
    settings.ENROLLMENT_MODE = "open"
    forget_keyring()
    forget_device_states()
    yield
    forget_keyring()
    forget_device_states()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def enrolled(client, transactional_db) -> dict:
    """A device enrolled through /bootstrap: the response body, with its device_id."""
    body = bootstrap(client, "laptop-ada").json()
    return {**body, "device_id": "laptop-ada"}
