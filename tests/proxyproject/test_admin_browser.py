"""The operator's admin in a real browser (Debian's Chromium, headless): log in, approve a pending
device, set its caps, see its usage and the dashboard. Screenshots go to test-artifacts/admin/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import orjson
import pytest
from django.contrib.auth import get_user_model

from fake_anthropic import FakeAnthropic
from tests.servers import BASE_DIR, gateway_process
from tests.support import MASTER_KEY
from tests.usage.cast import ensure_seeded_prices
from usage.models import UsageRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = BASE_DIR / "test-artifacts" / "admin"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (.ci/run installs it)")
# input 100,000 and output 10,000 tokens of Sonnet 4.5 ($3 / $15 per million): $0.30 + $0.15
USAGE = {"input_tokens": 100_000, "output_tokens": 10_000}


@pytest.fixture
def approval_gateway(transactional_db, settings):
    ensure_seeded_prices()
    with FakeAnthropic(api_keys={MASTER_KEY}) as fake:
        server = gateway_process(
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY=MASTER_KEY,
            ENROLLMENT_MODE="approval",
            REDIS_KEY_PREFIX=settings.REDIS_KEY_PREFIX,
        ).start()
        yield server
        server.stop()


@pytest.fixture
def browser_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls are still
    # plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_operator_approves_a_device_sets_caps_and_sees_its_usage(approval_gateway, browser_page):
    server, page = approval_gateway, browser_page
    get_user_model().objects.create_superuser("operator", password="operator-password-123")
    pending = httpx.post(server.url + "/bootstrap", json={"device_id": "laptop-ada", "app_version": "2.1.0"}, timeout=10)
    assert pending.status_code == 403
    error = pending.json()["error"]
    assert error["details"]["error_code"] == "device_pending_approval"
    device_secret = error["details"]["device_secret"]

    page.goto(server.url + "/admin/")
    assert "Log in" in page.title()
    shot(page, "01-login")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-password-123")
    page.click("input[type=submit]")
    page.wait_for_url(server.url + "/admin/")
    assert page.locator("#admin-overview h2 a").first.inner_text() == "Dashboard"
    assert page.locator("#overview-attention").inner_text() == "1 device waiting for approval"
    shot(page, "02-index")

    page.goto(server.url + "/admin/tokens/device/?status__exact=pending")
    row = page.locator("#result_list tbody tr", has_text="laptop-ada")
    assert "Pending" in row.inner_text()
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "approve")
    page.click("button[name=index]")
    assert "1 device approved." in page.locator("ul.messagelist").inner_text()
    shot(page, "03-approved")

    enrolled = httpx.post(
        server.url + "/bootstrap",
        json={"device_id": "laptop-ada", "app_version": "2.1.0", "device_secret": device_secret},
        timeout=10,
    )
    assert enrolled.status_code == 200, enrolled.text
    token = enrolled.json()["wrapper_token"]

    page.goto(server.url + "/admin/tokens/device/")
    page.click("#result_list a:text-is('laptop-ada')")
    page.fill("#id_daily_spend_cap_usd", "5.00")
    page.fill("#id_monthly_spend_cap_usd", "50.00")
    page.click("input[name=_continue]")
    assert "was changed successfully" in page.locator("ul.messagelist").inner_text()

    for _ in range(2):
        answer = httpx.post(
            server.url + "/v1/messages",
            timeout=10,
            headers={
                "authorization": f"Bearer {token}",
                "anthropic-version": "2023-06-01",
                "x-fake-usage": orjson.dumps(USAGE).decode(),
            },
            json={"model": "claude-sonnet-4-5-20250929", "max_tokens": 10_000, "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 15
    while UsageRecord.objects.filter(device_ref="laptop-ada").count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    page.reload()
    assert "Today $0.90 / $5.00 · this month $0.90 / $50.00" in page.locator(".field-usage_summary").inner_text()
    in_force = page.locator(".field-effective_policy").inner_text()
    assert "Daily spend cap (USD)\t$5.00\tthis device" in in_force
    shot(page, "04-device-caps-and-usage")

    page.goto(server.url + "/admin/tokens/device/")
    row_text = page.locator("#result_list tbody tr", has_text="laptop-ada").inner_text()
    assert "$0.90 / $5.00" in row_text and "$0.90 / $50.00" in row_text and "Active" in row_text
    shot(page, "05-device-list")

    page.goto(server.url + "/admin/usage/usagerecord/dashboard/")
    assert page.locator("svg").count() >= 1
    assert "laptop-ada" in page.content()
    shot(page, "06-dashboard")

    page.goto(server.url + "/admin/usage/usagerecord/")
    page.fill("input[name=device_ref]", "laptop-ada")
    page.locator("input[name=device_ref] ~ input[type=submit]").click()
    page.wait_for_load_state()  # count() does not wait for the filtered page
    page.locator("#result_list tbody tr").first.wait_for()
    assert page.locator("#result_list tbody tr").count() == 2
    visible = page.locator("#changelist .results").bounding_box()
    assert visible is not None
    for column in ("status", "error_type", "total_tokens", "cost_display", "latency_display"):
        box = page.locator(f"#result_list thead th.column-{column}").bounding_box()
        # The important columns fit 1400 px: inside the list's visible area, no horizontal scrolling.
        assert box is not None and box["x"] + box["width"] <= visible["x"] + visible["width"] + 1, column
    shot(page, "07-usage-records-filtered")
