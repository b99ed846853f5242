"""The security tests' browser: the same headless Chromium the admin browser test drives."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.proxyproject.test_admin_browser import CHROMIUM, browser_page  # noqa: F401  (a fixture, shared)

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
