"""The `/v1` routes the gateway offers, and the one canonical form a request path must have.

Policy is decided on exactly the path that is forwarded. The upstream client (aiohttp, through
yarl) normalises what it sends: dot segments, percent-encoded dots and slashes, empty segments. A
path that is not already in that normal form would be checked as one route and forwarded as
another (`/v1/./messages` checked as an unknown path, served as `/v1/messages`; `/v1/../admin`
forwarded outside `/v1` with the master key), so such a path is refused before any other work:
no authentication, no body read, nothing forwarded.

Canonical here means: starts with `/v1/`, segments of unreserved characters (RFC 3986 letters,
digits, `-`, `.`, `_`, `~`) plus `:` and `@`, no empty segment (no `//`, no trailing `/`), no
segment that is or ends with a dot, and no percent-encoding at all. Every path the official SDKs
and Claude Code send has that form; resource and model ids are plain tokens.

Every route carries its policy class:

- `model_checked`: the body names a model (or, for a batch, one per request) that must match the
  device's allowlist; tokens per minute counted;
- `spend_reserved`: also model-checked, and the request's cost is reserved against spend caps;
- `owned_resource`: names or lists resources (batches, files) that belong to the device that
  created them;
- `catalogue`: read-only, the same for every device (models).

A method and path the table does not hold is refused with 404 `route_not_offered`, unless an
operator sets `GATEWAY_FORWARD_UNKNOWN_ROUTES`: such requests are then forwarded (canonical paths
only) with the model allowlist applied whenever a JSON body names a model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from django.conf import settings

from proxyproject.lib.errors import NonCanonicalPath, RouteNotOffered

PROXY_PREFIX = "/v1/"


class RoutePolicy(enum.Enum):
    MODEL_CHECKED = "model_checked"
    SPEND_RESERVED = "spend_reserved"
    OWNED_RESOURCE = "owned_resource"
    CATALOGUE = "catalogue"
    UNKNOWN_FORWARDED = "unknown_forwarded"


class ResourceKind(enum.Enum):
    BATCH = "batch"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One line of the route table."""

    name: str
    method: str
    pattern: str  # `{id}` stands for one path segment
    policy: RoutePolicy
    resource_kind: ResourceKind | None = None
    reads_model: bool = False  # the JSON body is parsed for the model(s) it names
    creates_resource: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """A request matched to the table: the spec, and the resource id the path names, if any."""

    spec: RouteSpec
    resource_id: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def policy(self) -> RoutePolicy:
        return self.spec.policy


M, S, O, C = RoutePolicy.MODEL_CHECKED, RoutePolicy.SPEND_RESERVED, RoutePolicy.OWNED_RESOURCE, RoutePolicy.CATALOGUE  # noqa: E741 (one-letter columns keep the table one route a row)
BATCH, FILE = ResourceKind.BATCH, ResourceKind.FILE

ROUTE_TABLE: tuple[RouteSpec, ...] = (
    RouteSpec("messages.create", "POST", "/v1/messages", S, reads_model=True),
    RouteSpec("messages.count_tokens", "POST", "/v1/messages/count_tokens", M, reads_model=True),
    RouteSpec("batches.create", "POST", "/v1/messages/batches", S, BATCH, reads_model=True, creates_resource=True),
    RouteSpec("batches.list", "GET", "/v1/messages/batches", O, BATCH),
    RouteSpec("batches.retrieve", "GET", "/v1/messages/batches/{id}", O, BATCH),
    RouteSpec("batches.results", "GET", "/v1/messages/batches/{id}/results", O, BATCH),
    RouteSpec("batches.cancel", "POST", "/v1/messages/batches/{id}/cancel", O, BATCH),
    RouteSpec("batches.delete", "DELETE", "/v1/messages/batches/{id}", O, BATCH),
    RouteSpec("files.upload", "POST", "/v1/files", O, FILE, creates_resource=True),
    RouteSpec("files.list", "GET", "/v1/files", O, FILE),
    RouteSpec("files.retrieve_metadata", "GET", "/v1/files/{id}", O, FILE),
    RouteSpec("files.download", "GET", "/v1/files/{id}/content", O, FILE),
    RouteSpec("files.delete", "DELETE", "/v1/files/{id}", O, FILE),
    RouteSpec("models.list", "GET", "/v1/models", C),
    RouteSpec("models.retrieve", "GET", "/v1/models/{id}", C),
)

UNKNOWN_ROUTE = RouteSpec("unknown", "*", "", RoutePolicy.UNKNOWN_FORWARDED, reads_model=True)

_SEGMENT = r"[A-Za-z0-9_~:@-](?:[A-Za-z0-9._~:@-]*[A-Za-z0-9_~:@-])?"
_CANONICAL_PATH = re.compile(r"/v1(?:/" + _SEGMENT + r")*")


def _index_routes(
    table: tuple[RouteSpec, ...],
) -> tuple[dict[tuple[str, str], Route], dict[tuple[str, int], list[tuple[tuple[str, ...], RouteSpec]]]]:
    """Exact paths in one dict (their Route made once); paths with an `{id}` segment by method and
    segment count."""
    exact: dict[tuple[str, str], Route] = {}
    templated: dict[tuple[str, int], list[tuple[tuple[str, ...], RouteSpec]]] = {}
    for spec in table:
        if "{id}" in spec.pattern:
            segments = tuple(spec.pattern.split("/"))
            templated.setdefault((spec.method, len(segments)), []).append((segments, spec))
        else:
            exact[(spec.method, spec.pattern)] = Route(spec)
    return exact, templated


_EXACT, _TEMPLATED = _index_routes(ROUTE_TABLE)


def is_canonical_path(raw_path: str) -> bool:
    """The path exactly as the client sent it (before any decoding) is in the one canonical form."""
    return _CANONICAL_PATH.fullmatch(raw_path) is not None


def match_route(method: str, path: str) -> Route | None:
    """The table's route for a canonical path, or None."""
    route = _EXACT.get((method, path))
    if route is not None:
        return route
    segments = path.split("/")
    for pattern, spec in _TEMPLATED.get((method, len(segments)), ()):
        resource_id = None
        for expected, actual in zip(pattern, segments):
            if expected == "{id}":
                resource_id = actual
            elif expected != actual:
                break
        else:
            return Route(spec, resource_id)
    return None


def resolve_route(method: str, raw_path: str) -> Route:
    """The route a request takes. Raises NonCanonicalPath (400) for a path not in canonical form and
    RouteNotOffered (404) for one the table does not hold, unless unknown routes are forwarded."""
    if not is_canonical_path(raw_path):
        raise NonCanonicalPath()
    route = match_route(method, raw_path)
    if route is not None:
        return route
    if settings.GATEWAY_FORWARD_UNKNOWN_ROUTES:
        return Route(UNKNOWN_ROUTE)
    raise RouteNotOffered(f"This gateway does not offer {method} {raw_path}.")
