"""The security tests' cast: the gateway's (the fake upstream that records what it received, devices
enrolled through /bootstrap, the in-process ASGI driver) and a browser, the same headless Chromium
the admin browser test drives."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

import proxyproject.asgi  # noqa: F401  (Django's logging set up now, not over caplog's handler)
from tests.gateway.conftest import fake_upstream, fresh_breaker_and_pool, token  # noqa: F401
from tests.proxyproject.test_admin_browser import CHROMIUM, browser_page  # noqa: F401  (a fixture, shared)
from tests.usage.conftest import live_prices, prices, private_usage_queues  # noqa: F401

OPERATOR_PASSWORD = "operator-password-123"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (.ci/run installs it)")


def log_in_in_browser(page, base_url: str) -> None:
    """A superuser logs in through the admin's form, leaving the session cookie in the browser."""
    get_user_model().objects.create_superuser("operator", password=OPERATOR_PASSWORD)
    page.goto(base_url + "/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base_url + "/admin/")
