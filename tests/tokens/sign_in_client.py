"""The calls a desktop client makes to sign its person in, for the sign-in tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from django.http import HttpResponse
from django.test import Client

LOOPBACK = "http://127.0.0.1:53682/callback"


def start(client: Client, device_id: str = "laptop-alice", **fields: Any) -> HttpResponse:
    body = {"device_id": device_id, "app_version": "1.0.0", **fields}
    return client.post("/auth/oidc/start", data=body, content_type="application/json")


def poll(client: Client, handle: str, **fields: Any) -> HttpResponse:
    return client.post("/auth/oidc/poll", data={"sign_in": handle, **fields}, content_type="application/json")


def device_sign_in(client: Client, provider, device_id: str = "laptop-alice", **fields: Any) -> HttpResponse:
    """Start, the person approves at the provider, poll once: the poll's answer."""
    started = start(client, device_id, **fields)
    assert started.status_code == 200, started.content
    provider.approve(started.json()["user_code"])
    return poll(client, started.json()["sign_in"])


def browser_redirect(authorization_url: str) -> dict[str, str]:
    """What the browser brings back to the loopback listener: the redirect's code and state."""
    back = httpx.get(authorization_url, follow_redirects=False)
    assert back.status_code == 302, back.text
    return {name: values[-1] for name, values in parse_qs(urlsplit(back.headers["location"]).query).items()}


def pkce_sign_in(client: Client, device_id: str = "laptop-alice", **fields: Any) -> HttpResponse:
    started = start(client, device_id, flow="pkce", redirect_uri=LOOPBACK, **fields)
    assert started.status_code == 200, started.content
    redirect = browser_redirect(started.json()["authorization_url"])
    return poll(client, started.json()["sign_in"], code=redirect["code"], state=redirect["state"])
