"""Fixtures for the tokens tests: each test gets its own Redis key space (the in-process caches are
emptied by the root conftest), and enrollment limits high enough that only the test about them
meets them."""

from __future__ import annotations

import uuid

import pytest

from tests.tokens.client import bootstrap


@pytest.fixture(autouse=True)
def isolated_token_state(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    settings.ENROLLMENT_RATE_LIMIT_MAX = 100_000
    settings.ENROLLMENT_MODE = "open"


@pytest.fixture
def enrolled(client) -> dict:
    """A device enrolled through /bootstrap: the response body, with its device_id. (The test
    module's django_db mark chooses the database mode.)"""
    body = bootstrap(client, "laptop-ada").json()
    return {**body, "device_id": "laptop-ada"}
