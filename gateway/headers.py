"""Which headers cross the gateway, in each direction: the one place that decides it.

Toward the upstream only an allowlist crosses, the headers of Anthropic's API and of its clients
(the official SDKs and Claude Code send nothing else the API reads):

    anthropic-*                 anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, ...
    x-stainless-*               the SDKs' own (lang, os, arch, runtime, retry-count, timeout, helper-method, ...)
    content-type, content-encoding, accept, user-agent
    x-app, x-claude-code-session-id, x-client-request-id   Claude Code's
    UPSTREAM_EXTRA_REQUEST_HEADERS                          names an operator adds (the tests add the fake's)

Everything else is dropped, and these even when they match the list above or the operator's names:
the client's credentials (its wrapper token must never reach Anthropic; the master key is added
here), `anthropic-organization-id` (the master key's organization is not the client's to name),
routing headers (`forwarded`, `x-forwarded-*`, `x-real-ip`: the client's claims about addresses,
which the upstream must not take for the gateway's), cookies (the gateway's own session must not
leak), hop-by-hop headers and those the client's `Connection` names (they describe the client's
connection, not ours), `host`/`content-length` (the transport sets them), and `accept-encoding`,
which becomes `identity`: the gateway reads usage from the bytes and may append an `event: error`
to a broken stream, which it cannot do to a compressed body. An allowlist rather than a denylist
because a header the gateway does not know may steer the upstream in ways it cannot see: the bundled
fake's `x-fake-fault` let one device make the upstream answer 5xx at will (see `gateway.breaker`).

Toward the client the upstream's headers come back except: hop-by-hop and framing headers (the
ASGI server frames the body itself; `content-encoding` stays, since the body is relayed as it came:
normally identity, as asked), `anthropic-organization-id` (names the master key's
organization), `anthropic-ratelimit-*` (the master key's limits; replaced by the device's own),
`set-cookie` (the upstream edge's cookies are not for the gateway's host), and `date`/`server`,
which the ASGI server adds itself (relaying them would send each twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

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
FORWARDED_NAMES = frozenset(
    {
        b"content-type",
        b"content-encoding",
        b"accept",
        b"user-agent",
        b"x-app",
        b"x-claude-code-session-id",
        b"x-client-request-id",
    }
)
FORWARDED_PREFIXES = (b"anthropic-", b"x-stainless-")
ROUTING_PREFIX = b"x-forwarded-"
NEVER_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"authorization",
    b"x-api-key",
    b"cookie",
    b"accept-encoding",
    b"anthropic-organization-id",
    b"forwarded",
    b"x-real-ip",
}
_NOT_RETURNED_TO_CLIENT = HOP_BY_HOP | {b"content-length", b"anthropic-organization-id", b"set-cookie", b"date", b"server"}
_UPSTREAM_RATE_LIMIT_PREFIX = b"anthropic-ratelimit-"
_IDENTITY = (b"accept-encoding", b"identity")


_DROP, _FORWARD, _CONNECTION = 0, 1, 2
_MAX_REMEMBERED_NAMES = 4096


class RequestHeaderAllowlist:
    """The allowlist for one value of UPSTREAM_EXTRA_REQUEST_HEADERS, with the verdict on each raw
    header name remembered: a request then costs one dict lookup per header, no lower-casing or
    prefix test (bytes.startswith with a tuple cost more than all the rest together). Names are
    the client's to choose, so only the first `_MAX_REMEMBERED_NAMES` are remembered."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        names = FORWARDED_NAMES | {name.lower().encode("latin-1") for name in extra}
        self.names = frozenset(name for name in names if name not in NEVER_FORWARDED and not name.startswith(ROUTING_PREFIX))
        self.verdicts: dict[bytes, int] = {}

    def forwards(self, lowered: bytes) -> bool:
        return lowered in self.names or (lowered.startswith(FORWARDED_PREFIXES) and lowered not in NEVER_FORWARDED)

    def judge(self, name: bytes) -> int:
        """The verdict on a name not yet in `verdicts`, remembered while there is room."""
        lowered = name.lower()
        verdict = _CONNECTION if lowered == b"connection" else _FORWARD if self.forwards(lowered) else _DROP
        if len(self.verdicts) < _MAX_REMEMBERED_NAMES:
            self.verdicts[name] = verdict
        return verdict


@lru_cache(maxsize=8)
def request_header_allowlist(extra: tuple[str, ...]) -> RequestHeaderAllowlist:
    return RequestHeaderAllowlist(extra)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `Connection`: hop-by-hop for this one message (RFC 9110 7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def upstream_request_headers(client_headers: Sequence[tuple[bytes, bytes]], credential: UpstreamCredential) -> RawHeaders:
    """The client's allowlisted headers as the upstream must see them, with the master key in the
    configured header. One pass: it runs for every header of every request."""
    allowlist = request_header_allowlist(settings.UPSTREAM_EXTRA_REQUEST_HEADERS)
    verdicts = allowlist.verdicts
    headers: RawHeaders = []
    connection: RawHeaders = []
    for header in client_headers:
        verdict = verdicts.get(header[0])
        if verdict is None:
            verdict = allowlist.judge(header[0])
        if verdict == _FORWARD:
            headers.append(header)
        elif verdict == _CONNECTION:
            connection.append(header)
    if connection:  # `Connection: keep-alive` names nothing forwarded: no second pass then
        nominated = frozenset(token for token in connection_tokens(connection) if allowlist.forwards(token))
        if nominated:
            headers = [(name, value) for name, value in headers if name.lower() not in nominated]
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
