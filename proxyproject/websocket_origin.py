"""Websocket origin check by exact origin: scheme, host and port.

A browser sends the operator's session cookie with a websocket opened by any page of the same
host name, whatever its port or scheme, and websockets have no CORS; so the Origin header is the
only thing that tells the gateway's own page from another page on the same machine. channels'
AllowedHostsOriginValidator compares the host name only, which let http://127.0.0.1:4952 read
the live feed. Allowed: the gateway's own origin (PROXY_BASE_URL), the origin the request was
made to (its scheme and a Host in ALLOWED_HOSTS), and WEBSOCKET_ALLOWED_ORIGINS.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def normalise_origin(value: str) -> str | None:
    """`scheme://host:port` with the default port written out and the host lowercased, or None
    for anything that is not an http(s) origin (`null`, opaque, a path or credentials)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def request_origin(scope: dict[str, Any]) -> str | None:
    """The origin this connection was made to, when its Host is one the gateway serves."""
    host = _header(scope, b"host")
    scheme = _HTTP_SCHEME.get(scope.get("scheme", "ws"))
    if not host or scheme is None:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return normalise_origin(f"{scheme}://{host}")


def allowed_origins(scope: dict[str, Any], configured: Iterable[str]) -> set[str]:
    origins = {normalise_origin(settings.PROXY_BASE_URL), request_origin(scope)}
    origins.update(normalise_origin(origin) for origin in configured)
    origins.discard(None)
    return origins  # type: ignore[return-value]


class ExactOriginValidator:
    """ASGI middleware: refuse (403 before the handshake) a websocket whose Origin is not allowed."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        normalised = normalise_origin(origin) if origin is not None else None
        if normalised is None or normalised not in allowed_origins(scope, settings.WEBSOCKET_ALLOWED_ORIGINS):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
