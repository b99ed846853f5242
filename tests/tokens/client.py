"""Small HTTP helpers for the tokens tests: the calls a desktop client makes."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from django.http import HttpResponse
from django.test import Client


def bootstrap(client: Client, device_id: str, app_version: str = "1.0.0", **fields: Any) -> HttpResponse:
    headers = fields.pop("headers", {})
    body = {"device_id": device_id, "app_version": app_version, **fields}
    return client.post("/bootstrap", data=body, content_type="application/json", headers=headers)


def refresh(client: Client, refresh_token: str) -> HttpResponse:
    return client.post("/refresh", data={"refresh_token": refresh_token}, content_type="application/json")


def refresh_with_bearer(client: Client, token: str) -> HttpResponse:
    """As the seed's client does: no body, the token in the Authorization header."""
    return client.generic("POST", "/refresh", headers={"authorization": f"Bearer {token}"})


def error_of(response: HttpResponse) -> tuple[int, str, str]:
    """(status, error type, error code) of an error envelope."""
    body = orjson.loads(response.content)
    assert body["type"] == "error", body
    return response.status_code, body["error"]["type"], body["error"]["details"]["error_code"]


def jwt_parts(token: str) -> tuple[dict, dict]:
    """Header and claims of a JWT, unverified, for assertions."""
    header, payload, _ = token.split(".")
    return _b64json(header), _b64json(payload)


def _b64json(segment: str) -> dict:
    return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
