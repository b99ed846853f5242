"""`ALLOWED_HOSTS` for `/v1`, which bypasses Django's request object and so its `get_host` check.

Without it a request for any Host reached the upstream with the master key while Django's own
paths refused it: a DNS-rebinding page could drive a device's token-less paths, and a cache or
proxy keyed on Host could be poisoned. The rule is Django's own (`validate_host`, the same
development fallback), so both halves of the platform answer the same Host the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from proxyproject.lib.errors import HostNotAllowed

_DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")
# Django's own logger for refused hosts: its filter keeps one rate-limited line however many arrive.
disallowed_host_logger = logging.getLogger("django.security.DisallowedHost")


def allowed_hosts() -> tuple[str, ...]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        return _DEBUG_HOSTS
    return tuple(hosts)


@lru_cache(maxsize=512)
def host_is_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Cached: a device sends the same Host on every request, and Django's check costs ~10 µs. The
    cache is bounded, so hosts an attacker makes up only push older entries out."""
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def request_host(headers: Sequence[tuple[bytes, bytes]], server: tuple[str, int] | None) -> str:
    """The Host header, else the server's address (as Django builds SERVER_NAME from the scope)."""
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    if server is None:
        return ""
    return f"{server[0]}:{server[1]}"


def check_host_allowed(headers: Sequence[tuple[bytes, bytes]], server: tuple[str, int] | None) -> None:
    """Raises HostNotAllowed (400) unless the request's host is one this gateway serves."""
    host = request_host(headers, server)
    if not host_is_allowed(host, allowed_hosts()):
        disallowed_host_logger.warning("Invalid Host header refused", extra={"event_fields": {"host": host[:256], "path": "/v1"}})
        raise HostNotAllowed()
