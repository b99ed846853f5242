"""Which headers cross the gateway, in each direction.

Toward the upstream everything the client sent goes through unchanged (anthropic-version,
anthropic-beta, x-stainless-*, Claude Code's session headers, ...) except: the client's
credentials (its wrapper token must never reach Anthropic), hop-by-hop headers (they describe the
client's connection, not ours), `host`/`content-length` (the transport sets them for the upstream
connection), cookies (the gateway's own session must not leak), and `accept-encoding`, which
becomes `identity`: the gateway reads usage from the bytes and may append an `event: error` to a
broken stream, which it cannot do to a compressed body.

Toward the client the upstream's headers come back except: hop-by-hop and framing headers (the
ASGI server frames the body itself; `content-encoding` stays, since the body is relayed as it came:
normally identity, as asked), `anthropic-organization-id` (names the master key's
organization), `anthropic-ratelimit-*` (the master key's limits; replaced by the device's own),
`set-cookie` (the upstream edge's cookies are not for the gateway's host), and `date`/`server`,
which the ASGI server adds itself (relaying them would send each twice).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.conf import settings

from gateway.keypool import UpstreamCredential

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED_UPSTREAM = HOP_BY_HOP | {b"host", b"content-length", b"authorization", b"x-api-key", b"cookie", b"accept-encoding"}
_NOT_RETURNED_TO_CLIENT = HOP_BY_HOP | {b"content-length", b"anthropic-organization-id", b"set-cookie", b"date", b"server"}
_UPSTREAM_RATE_LIMIT_PREFIX = b"anthropic-ratelimit-"
_IDENTITY = (b"accept-encoding", b"identity")


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `Connection`: hop-by-hop for this one message (RFC 9110 7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def upstream_request_headers(client_headers: Sequence[tuple[bytes, bytes]], credential: UpstreamCredential) -> RawHeaders:
    """The client's headers as the upstream must see them, with the master key in the configured header."""
    dropped = _NOT_FORWARDED_UPSTREAM | connection_tokens(client_headers)
    headers = [(name, value) for name, value in client_headers if name.lower() not in dropped]
    headers.append(_IDENTITY)
    if settings.UPSTREAM_AUTH_HEADER == "authorization":
        headers.append((b"authorization", b"Bearer " + credential.secret.encode("latin-1")))
    else:
        headers.append((b"x-api-key", credential.secret.encode("latin-1")))
    return headers


def client_response_headers(
    upstream_headers: Sequence[tuple[bytes, bytes]],
    *,
    rate_limit_headers: Sequence[tuple[bytes, bytes]],
    gateway_request_id: str,
    content_length: int | None,
) -> RawHeaders:
    """The upstream's response headers as the client gets them; `content_length` when the body's
    final size is known (None: the server streams it chunked)."""
    dropped = _NOT_RETURNED_TO_CLIENT | connection_tokens(upstream_headers)
    headers = [
        (name, value)
        for name, value in upstream_headers
        if (lowered := name.lower()) not in dropped and not lowered.startswith(_UPSTREAM_RATE_LIMIT_PREFIX)
    ]
    headers.extend(rate_limit_headers)
    headers.append((b"x-gateway-request-id", gateway_request_id.encode()))
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return headers


def header_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of `name` (lower-case), as raw bytes."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
