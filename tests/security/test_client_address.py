"""Spoofing the client address: forwarding headers name the client only when the peer is one of
TRUSTED_PROXIES, and then the right-most address that is not a trusted proxy is the client. The
enrollment abuse limit, the audit trail and the request log all see that address; the ASGI server
as `make run` starts it does not rewrite the peer from the headers itself."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from proxyproject.server import server_argv
from tests.gateway.conftest import fake_upstream, fresh_breaker_and_pool  # noqa: F401  (fixtures)
from tests.servers import ServerProcess, free_port, server_environment
from tests.support import MESSAGE_BODY, enroll_device
from tokens.models import AuditEvent, AuditKind

BALANCERS = "10.9.0.0/16"
BALANCER = "10.9.0.5"


def random_address() -> str:
    """An address of the benchmarking range (198.18.0.0/15) for this test alone: on Redis the limiter's buckets outlive a test."""
    return str(ipaddress.ip_address("198.18.0.0") + random.randrange(1, 2**17))


async def asgi_request(
    method: str, path: str, *, peer: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """One request into the project's ASGI application from `peer`, as the server reports it."""
    from proxyproject.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in {"host": "127.0.0.1", **(headers or {})}.items()],
        "client": (peer, 40000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, object] = {"body": b""}

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message.get("body"):
            answer["body"] += message["body"]

    await asyncio.wait_for(application(scope, receive, send), timeout=20)
    return answer["status"], answer["body"]


async def bootstrap(peer: str, **headers: str) -> int:
    body = orjson.dumps({"device_id": f"dev-{random.getrandbits(64):016x}", "app_version": "1.0.0"})
    status, _ = await asgi_request(
        "POST", "/bootstrap", peer=peer, headers={"content-type": "application/json", **headers}, body=body
    )
    return status


@pytest.fixture
def small_limit(settings, transactional_db):
    settings.ENROLLMENT_RATE_LIMIT_MAX = 20
    settings.ENROLLMENT_RATE_LIMIT_WINDOW = 60_000
    settings.TRUSTED_PROXIES = ()


async def test_spoofed_x_forwarded_for_from_an_untrusted_peer_does_not_escape_the_enrollment_limit(small_limit):
    peer = random_address()
    statuses = [await bootstrap(peer) for _ in range(30)]
    assert (statuses.count(200), statuses.count(429)) == (20, 10)
    spoofed = [await bootstrap(peer, **{"x-forwarded-for": random_address()}) for _ in range(10)]
    assert spoofed == [429] * 10


async def test_spoofed_forwarded_header_from_an_untrusted_peer_does_not_escape_the_enrollment_limit(small_limit, settings):
    settings.TRUSTED_PROXY_HEADER = "forwarded"
    peer = random_address()
    assert [await bootstrap(peer) for _ in range(21)][-1] == 429
    assert await bootstrap(peer, forwarded=f"for={random_address()}") == 429


async def test_a_peer_outside_trusted_proxies_is_the_client_even_when_proxies_are_configured(small_limit, settings):
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS),)
    peer = random_address()
    assert [await bootstrap(peer) for _ in range(21)][-1] == 429
    assert await bootstrap(peer, **{"x-forwarded-for": random_address()}) == 429


async def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client(small_limit, settings):
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS),)
    client, other = random_address(), random_address()
    statuses = [await bootstrap(BALANCER, **{"x-forwarded-for": client}) for _ in range(21)]
    assert (statuses.count(200), statuses[-1]) == (20, 429)
    # Addresses the client wrote to the left of the one the balancer appended change nothing ...
    assert await bootstrap(BALANCER, **{"x-forwarded-for": f"{other}, {client}"}) == 429
    # ... nor does an inner trusted hop between the client and the balancer ...
    assert await bootstrap(BALANCER, **{"x-forwarded-for": f"{other}, {client}, 10.9.3.4"}) == 429
    # ... while another client behind the same balancer has its own budget.
    assert await bootstrap(BALANCER, **{"x-forwarded-for": f"{client}, {other}"}) == 200


async def test_behind_a_trusted_proxy_the_forwarded_header_is_read_when_configured(small_limit, settings):
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS), ipaddress.ip_network("2001:db8:9::/48"))
    settings.TRUSTED_PROXY_HEADER = "forwarded"
    client = random_address()
    forwarded = f'for={random_address()};proto=https, for="{client}:4711", for="[2001:db8:9::7]"'
    assert [await bootstrap(BALANCER, forwarded=forwarded) for _ in range(21)][-1] == 429
    # X-Forwarded-For is not the configured header: a client's forged one is ignored.
    assert await bootstrap(BALANCER, forwarded=forwarded, **{"x-forwarded-for": random_address()}) == 429


async def test_an_entry_that_is_not_an_address_ends_at_the_trusted_hop_that_wrote_it(small_limit, settings):
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS),)
    statuses = [await bootstrap(BALANCER, **{"x-forwarded-for": f"{random_address()}, unknown"}) for _ in range(21)]
    assert (statuses.count(200), statuses[-1]) == (20, 429)  # all counted against the balancer's own address


async def test_the_audit_trail_records_the_client_behind_a_trusted_proxy(small_limit, settings):
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS),)
    client = random_address()
    body = orjson.dumps({"device_id": "audited-device", "app_version": "1.0.0"})
    status, _ = await asgi_request(
        "POST",
        "/bootstrap",
        peer=BALANCER,
        body=body,
        headers={"content-type": "application/json", "x-forwarded-for": f"203.0.113.66, {client}"},
    )
    assert status == 200
    ips = await sync_to_async(list)(
        AuditEvent.objects.filter(device_ref="audited-device", kind=AuditKind.BOOTSTRAP).values_list("ip", flat=True)
    )
    assert ips == [client]


async def test_the_request_log_names_the_client_behind_a_trusted_proxy(transactional_db, settings, caplog, fake_upstream):  # noqa: F811
    settings.TRUSTED_PROXIES = (ipaddress.ip_network(BALANCERS),)
    caplog.set_level(logging.INFO, logger="gateway.proxy")
    token, client = await enroll_device(), random_address()
    status, _ = await asgi_request(
        "POST",
        "/v1/messages",
        peer=BALANCER,
        body=MESSAGE_BODY,
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "x-forwarded-for": f"203.0.113.66, {client}",
        },
    )
    assert status == 200
    completed = [r.event_fields for r in caplog.records if r.getMessage() == "Request completed"]
    assert [fields["clientIp"] for fields in completed] == [client]


def test_the_server_make_run_starts_does_not_take_the_client_address_from_x_forwarded_for(transactional_db):
    port = free_port()
    env = server_environment(
        PORT=str(port), ENROLLMENT_RATE_LIMIT_MAX="3", TRUSTED_PROXIES="", REDIS_KEY_PREFIX=f"xff-{random.getrandbits(32):08x}"
    )
    server = ServerProcess(server_argv("127.0.0.1", port), env, port).start()
    try:

        def bootstrap_live(**headers: str) -> int:
            body = {"device_id": f"dev-{random.getrandbits(64):016x}", "app_version": "1.0.0"}
            return httpx.post(server.url + "/bootstrap", json=body, headers=headers, timeout=10).status_code

        assert [bootstrap_live() for _ in range(4)] == [200, 200, 200, 429]
        assert [bootstrap_live(**{"x-forwarded-for": random_address()}) for _ in range(3)] == [429, 429, 429]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("trusted", "behind_proxy", "ids"),
    [
        ("0.0.0.0/0", False, ["proxyproject.W001"]),
        ("10.0.0.0/8,::/0", True, ["proxyproject.W001"]),
        ("", True, ["proxyproject.W002"]),
        ("10.9.0.0/16", True, []),
        ("", False, []),
    ],
    ids=["trust-every-ipv4", "trust-every-ipv6", "balancer-not-trusted", "balancer-trusted", "no-balancer"],
)
def test_the_deploy_check_reports_trusting_everyone_or_no_balancer(settings, trusted, behind_proxy, ids):
    from django.core.checks import run_checks

    settings.TRUSTED_PROXIES = tuple(ipaddress.ip_network(part) for part in trusted.split(",") if part)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if behind_proxy else None
    assert [message.id for message in run_checks(include_deployment_checks=True) if message.id.startswith("proxyproject.")] == ids


def test_a_malformed_trusted_proxies_setting_refuses_to_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from proxyproject.settings import env_networks

    monkeypatch.setenv("TRUSTED_PROXIES", "10.9.0.0/16, 2001:db8::/32 ,")
    assert env_networks("TRUSTED_PROXIES") == (ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("2001:db8::/32"))
    monkeypatch.setenv("TRUSTED_PROXIES", "10.9.0.0/16,balancer.internal")
    with pytest.raises(ImproperlyConfigured, match="'balancer.internal' is not an IP address or CIDR network"):
        env_networks("TRUSTED_PROXIES")
