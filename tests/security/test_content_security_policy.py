"""Script injection into the operator console: every HTML page sends a strict Content-Security-
Policy (no inline script or style, only the gateway's own assets), and every page still works
under it: loaded in headless Chromium with the policy on, none reports a violation."""

from __future__ import annotations

from django.test import Client

from proxyproject.content_security import CONTENT_SECURITY_POLICY
from tests.security.conftest import log_in_in_browser, needs_chromium
from tokens.models import Device

# (path, a selector that shows the page's own script has run, when it has one)
CONSOLE_PAGES = [
    ("/admin/", None),
    ("/admin/tokens/device/", "#action-toggle"),
    ("/admin/usage/usagerecord/", None),
    ("/admin/usage/usagerecord/dashboard/", "svg.usage-chart"),
    ("/admin/usage/usagerecord/live/", "#live-status:text-is('live')"),
    ("/admin/gateway/upstreamkey/", None),
    ("/admin/usage/modelprice/add/", None),
    ("/api/docs", ".swagger-ui .info"),
]


def test_every_html_page_sends_the_policy(admin_client):
    assert Client().get("/admin/login/")["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    for path, _ in CONSOLE_PAGES:
        response = admin_client.get(path)
        assert (path, response.status_code, response["Content-Security-Policy"]) == (path, 200, CONTENT_SECURITY_POLICY)


def test_json_answers_carry_no_html_policy(db):
    assert "Content-Security-Policy" not in Client().get("/healthz")


def test_the_policy_forbids_inline_script_and_foreign_origins():
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert (directives["object-src"], directives["base-uri"], directives["frame-ancestors"]) == ("'none'",) * 3


@needs_chromium
def test_no_console_page_violates_the_policy_in_a_browser(live_gateway, browser_page):
    page = browser_page
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(f"{page.url}: {message.text}") if "Content Security Policy" in message.text else None,
    )
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )
    log_in_in_browser(page, live_gateway.url)
    device = Device.objects.create(device_id="laptop-ada")

    for path, ready in [*CONSOLE_PAGES, (f"/admin/tokens/device/{device.pk}/change/", None)]:
        response = page.goto(live_gateway.url + path)
        assert (path, response.status, response.headers["content-security-policy"]) == (path, 200, CONTENT_SECURITY_POLICY)
        if ready:
            page.wait_for_selector(ready)
        page.wait_for_load_state("networkidle")
    assert violations == []
