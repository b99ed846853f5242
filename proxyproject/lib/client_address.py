"""The client's address: the peer the server saw, or, when that peer is a proxy listed in
TRUSTED_PROXIES, what the proxies say in the one forwarding header they write (TRUSTED_PROXY_HEADER).

Forwarding headers are written by whoever sends the request, so they are read only from a trusted
peer, and only from the right: each trusted proxy appends the address it received the request from,
so walking right to left past trusted addresses, the first address that is not trusted is the last
one a trusted proxy vouched for. Everything left of it was written by the client and is ignored.
An entry that is not an address (garbage, `unknown`, an obfuscated RFC 7239 identifier) ends the
walk at the trusted hop that wrote it: its address is the answer, never the client's claim.

The ASGI server must not rewrite the peer from these headers itself (uvicorn does by default, for
127.0.0.1): `proxyproject.server` runs it with `--no-proxy-headers`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADER_X_FORWARDED_FOR = "x-forwarded-for"
HEADER_FORWARDED = "forwarded"
_META_NAMES = {HEADER_X_FORWARDED_FOR: "HTTP_X_FORWARDED_FOR", HEADER_FORWARDED: "HTTP_FORWARDED"}
# RFC 7239 `for=` parameters: a token or a quoted string; the value may carry a port and brackets.
_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)
# Header chains longer than this are cut from the left: only the right end is ever trusted anyway.
MAX_HOPS = 32


def parse_address(text: str) -> IPAddress | None:
    """An address from a header entry or a peer: with or without port or brackets; IPv4-mapped
    IPv6 addresses become IPv4, so one client has one spelling (one rate-limit bucket)."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_chain(header: str, values: Iterable[str]) -> list[str]:
    """The hop entries of every line of one forwarding header, in order, left to right."""
    entries: list[str] = []
    for value in values:
        if header == HEADER_FORWARDED:
            entries.extend(match.group(1) for match in _FORWARDED_FOR.finditer(value))
        else:
            entries.extend(part for part in value.split(","))
    return entries[-MAX_HOPS:]


def is_trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def resolve_client_ip(peer: str, header_values: Sequence[str], trusted: Sequence[Network], header: str) -> str:
    """The client's address, given the peer and the lines of the configured forwarding header."""
    peer_address = parse_address(peer) if peer else None
    if peer_address is None:
        return peer
    if not trusted or not header_values or not is_trusted(peer_address, trusted):
        return str(peer_address)
    vouched = peer_address
    for entry in reversed(forwarded_chain(header, header_values)):
        address = parse_address(entry)
        if address is None:
            break
        vouched = address
        if not is_trusted(address, trusted):
            break
    return str(vouched)


def client_ip(request: HttpRequest) -> str:
    """The client's address of a Django request ("" when the server reported no peer)."""
    peer = request.META.get("REMOTE_ADDR") or ""
    if not settings.TRUSTED_PROXIES:
        return peer
    value = request.META.get(_META_NAMES[settings.TRUSTED_PROXY_HEADER])
    return resolve_client_ip(peer, [value] if value else [], settings.TRUSTED_PROXIES, settings.TRUSTED_PROXY_HEADER)


def client_ip_from_scope(scope: Mapping[str, Any]) -> str:
    """The client's address of an ASGI HTTP or websocket scope ("" when the server reported no peer)."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not settings.TRUSTED_PROXIES:
        return peer
    name = settings.TRUSTED_PROXY_HEADER.encode()
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]
    return resolve_client_ip(peer, values, settings.TRUSTED_PROXIES, settings.TRUSTED_PROXY_HEADER)
