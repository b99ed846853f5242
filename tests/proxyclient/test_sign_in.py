"""`proxyclient login` and `proxyclient token` on a gateway that enrolls devices by signing their
person in (ENROLLMENT_MODE=oidc), against the test identity provider. The "browser" the CLI opens
is an HTTP GET of the verification URL, which the test provider takes as the person's approval."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from proxyclient.cli import HELPER_SIGN_IN_WAIT_SECONDS
from tests.oidc_provider import OIDCProvider
from tests.proxyclient.conftest import start_gateway
from tests.proxyclient.test_cli import cli_environment, run_cli
from tests.servers import ServerProcess
from tokens.models import Device


@pytest.fixture(scope="module")
def module_provider() -> Iterator[OIDCProvider]:
    provider = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def module_people_gateway(django_db_setup, module_provider) -> Iterator[ServerProcess]:
    server = start_gateway(
        ENROLLMENT_MODE="oidc",
        PEOPLE_OIDC_ISSUER=module_provider.issuer,
        PEOPLE_OIDC_CLIENT_ID=module_provider.client_id,
        PEOPLE_OIDC_CLIENT_SECRET=module_provider.client_secret,
    )
    yield server
    server.stop()


@pytest.fixture
def people_gateway(module_people_gateway, module_provider, transactional_db) -> ServerProcess:
    for subjects in (module_provider.disabled_subjects, module_provider.refused_at_userinfo, module_provider.inactive_subjects):
        subjects.clear()
    module_provider.interval = 5
    module_provider.token_endpoint_down = module_provider.userinfo_down = False
    return module_people_gateway


@pytest.fixture(autouse=True)
def empty_working_directory(tmp_path, monkeypatch):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def approve_in_browser(url: str) -> None:
    assert httpx.get(url).status_code == 200


def never_sleep(seconds: float) -> None:
    raise AssertionError(f"polled again after {seconds} s: the sign-in should have been approved already")


def test_login_shows_the_url_and_code_opens_the_browser_and_enrolls_the_device(people_gateway, module_provider, tmp_path):
    opened: list[str] = []

    def browser(url: str) -> None:
        opened.append(url)
        approve_in_browser(url)

    code, out, err = run_cli(["login"], cli_environment(people_gateway.url, tmp_path), opener=browser, sleep=never_sleep)
    assert code == 0, err
    device_id = (tmp_path / "device_id").read_text().strip()
    assert out.startswith(f"Signed in on device {device_id}; the token is valid until ")
    (url,) = opened
    user_code = url.rsplit("user_code=", 1)[1]
    assert err.splitlines() == [
        f"proxyclient: sign in with your company account: open {module_provider.issuer}/device",
        f"proxyclient: and enter the code {user_code}",
        "proxyclient: waiting for the sign-in to be approved...",
    ]
    assert Device.objects.get(device_id=device_id).person.email == "alice@example.com"


def test_token_signs_in_when_needed_then_renews_silently(people_gateway, tmp_path):
    """Asked again within the helper TTL (as Claude Code does after a 401), `token` renews: through
    the gateway's refresh, which renews the provider session too, without a word on stderr."""
    environ = cli_environment(people_gateway.url, tmp_path)
    code, out, err = run_cli(["token"], environ, opener=approve_in_browser, sleep=never_sleep)
    assert code == 0, err
    token = out.removesuffix("\n")
    assert token.count(".") == 2 and "\n" not in token
    assert "and enter the code" in err
    code, renewed, err = run_cli(["token"], environ, opener=approve_in_browser, sleep=never_sleep)
    assert (code, err) == (0, "") and renewed.strip() not in ("", token)


def test_token_waits_the_interval_while_the_person_has_not_approved(people_gateway, module_provider, tmp_path):
    """With the provider's interval at 0 the gateway may ask it at every poll, so the approval
    given during the first wait is seen at the second poll."""
    module_provider.interval = 0
    waits: list[float] = []

    def approve_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        module_provider.approve()

    code, out, err = run_cli(
        ["token"], cli_environment(people_gateway.url, tmp_path), opener=lambda url: None, sleep=approve_while_waiting
    )
    assert (code, waits) == (0, [0.0]), err


def test_without_a_browser_the_person_is_told_to_open_the_address(people_gateway, module_provider, tmp_path):
    def no_browser(url: str) -> None:
        raise OSError("no display")

    module_provider.interval = 0
    code, _, err = run_cli(
        ["login"], cli_environment(people_gateway.url, tmp_path), opener=no_browser, sleep=lambda s: module_provider.approve()
    )
    assert code == 0
    assert "could not open a browser (OSError); open the address yourself" in err


def signed_in_over_http(gateway: ServerProcess, provider: OIDCProvider, device_id: str) -> dict:
    started = httpx.post(f"{gateway.url}/auth/oidc/start", json={"device_id": device_id, "app_version": "1.0.0"}).json()
    provider.approve(started["user_code"])
    polled = httpx.post(f"{gateway.url}/auth/oidc/poll", json={"sign_in": started["sign_in"]})
    assert polled.status_code == 200, polled.text
    return polled.json()


@pytest.mark.parametrize("shown_as", ["invalid_grant", "userinfo", "inactive"])
def test_a_person_disabled_at_the_provider_is_refused_at_the_next_refresh(people_gateway, module_provider, shown_as):
    body = signed_in_over_http(people_gateway, module_provider, f"laptop-{shown_as}")
    module_provider.disable_account(shown_as)
    refused = httpx.post(f"{people_gateway.url}/refresh", json={"refresh_token": body["refresh_token"]})
    expected = "sign_in_required" if shown_as == "invalid_grant" else "person_disabled"
    assert (refused.status_code, refused.json()["error"]["details"]["error_code"]) == (403, expected)
    answered = httpx.get(f"{people_gateway.url}/device", headers={"authorization": f"Bearer {body['wrapper_token']}"})
    assert answered.status_code == 401


def test_a_provider_outage_at_refresh_keeps_the_person_signed_in(people_gateway, module_provider):
    body = signed_in_over_http(people_gateway, module_provider, "laptop-outage")
    module_provider.token_endpoint_down = True
    renewed = httpx.post(f"{people_gateway.url}/refresh", json={"refresh_token": body["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    module_provider.token_endpoint_down, module_provider.userinfo_down = False, True
    renewed = httpx.post(f"{people_gateway.url}/refresh", json={"refresh_token": renewed.json()["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    assert Device.objects.get(device_id="laptop-outage").person.active is True


@pytest.fixture
def code_flow_gateway(django_db_setup, transactional_db) -> Iterator[tuple[ServerProcess, OIDCProvider]]:
    """A gateway whose provider offers no device grant (the gateway reads that from discovery once
    an hour, so it gets a provider of its own)."""
    provider = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    provider.device_grant_offered = False
    server = start_gateway(
        ENROLLMENT_MODE="oidc",
        PEOPLE_OIDC_ISSUER=provider.issuer,
        PEOPLE_OIDC_CLIENT_ID=provider.client_id,
        PEOPLE_OIDC_CLIENT_SECRET=provider.client_secret,
    )
    yield server, provider
    server.stop()
    provider.stop()


def test_login_with_a_provider_without_the_device_grant_comes_back_to_the_loopback_listener(code_flow_gateway, tmp_path):
    gateway, provider = code_flow_gateway
    opened: list[str] = []

    def browser(url: str) -> None:
        opened.append(url)
        assert httpx.get(url, follow_redirects=True).status_code == 200  # the provider sends it back to the client

    code, out, err = run_cli(["login"], cli_environment(gateway.url, tmp_path), opener=browser, sleep=never_sleep)
    assert code == 0, err
    (url,) = opened
    assert url.startswith(f"{provider.issuer}/authorize?") and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in url
    assert err.splitlines()[:2] == [
        f"proxyclient: sign in with your company account: open {url}",
        "proxyclient: waiting for the sign-in to be approved...",
    ]
    device_id = (tmp_path / "device_id").read_text().strip()
    assert Device.objects.get(device_id=device_id).person.email == "alice@example.com"


class FakeTime:
    """The CLI's clock, moved on by its waits between polls."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_gives_up_before_claude_codes_helper_timeout_and_says_to_run_login(people_gateway, module_provider, tmp_path):
    """Claude Code gives apiKeyHelper 10 minutes; `token` stops waiting for a sign-in at 9."""
    module_provider.interval = 60
    fake = FakeTime()
    started = fake.now
    code, out, err = run_cli(
        ["token"], cli_environment(people_gateway.url, tmp_path), opener=lambda url: None, clock=fake, sleep=fake.sleep
    )
    assert (code, out) == (4, "")
    assert fake.now - started == HELPER_SIGN_IN_WAIT_SECONDS
    assert err.splitlines()[-2:] == [
        "proxyclient: The sign-in was not approved within 9 min.",
        "What to do: The sign-in took too long or was already used; run `proxyclient login` again.",
    ]


def test_token_without_a_browser_and_without_a_reader_says_to_run_login_at_once(people_gateway, tmp_path):
    """As Claude Code's helper, stderr is a pipe nobody reads until the helper ends: without a
    browser no one could see the code, so waiting would only hold Claude Code for 10 minutes."""
    code, out, err = run_cli(
        ["token"], cli_environment(people_gateway.url, tmp_path), opener=lambda url: False, sleep=never_sleep
    )
    assert (code, out) == (4, "")
    assert err.splitlines()[-2:] == [
        "proxyclient: A sign-in is needed and no browser could be opened (no browser found).",
        "What to do: Run `proxyclient login` in a terminal (it shows the address and code to sign in with), then try again.",
    ]


def test_login_without_a_browser_still_waits_for_the_person_who_reads_the_code(people_gateway, module_provider, tmp_path):
    module_provider.interval = 0
    code, _, err = run_cli(
        ["login"],
        cli_environment(people_gateway.url, tmp_path),
        opener=lambda url: False,
        sleep=lambda s: module_provider.approve(),
    )
    assert code == 0, err
    assert "could not open a browser (no browser found); open the address yourself" in err


@pytest.fixture
def tightly_limited_gateway(django_db_setup, transactional_db) -> Iterator[tuple[ServerProcess, OIDCProvider]]:
    """Two polls per sign-in per second, and a provider that lets the gateway ask at every poll."""
    provider = OIDCProvider(client_id="gateway-devices", client_secret="devices-secret").start()
    provider.interval = 0
    server = start_gateway(
        ENROLLMENT_MODE="oidc",
        PEOPLE_SIGN_IN_POLL_MAX="2",
        ENROLLMENT_RATE_LIMIT_WINDOW="1000",
        PEOPLE_OIDC_ISSUER=provider.issuer,
        PEOPLE_OIDC_CLIENT_ID=provider.client_id,
        PEOPLE_OIDC_CLIENT_SECRET=provider.client_secret,
    )
    yield server, provider
    server.stop()
    provider.stop()


def test_token_waits_out_a_rate_limited_poll_and_the_sign_in_goes_on(tightly_limited_gateway, tmp_path):
    gateway, provider = tightly_limited_gateway
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if seconds > 0:  # the third poll was answered 429: its retry-after, not the provider's interval
            provider.approve()
        time.sleep(seconds)

    code, out, err = run_cli(["token"], cli_environment(gateway.url, tmp_path), opener=lambda url: None, sleep=wait)
    assert code == 0, err
    assert waits[:2] == [0.0, 0.0] and len(waits) >= 3 and all(0 < seconds <= 1.0 for seconds in waits[2:])
