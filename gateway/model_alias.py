"""Applying a device's model aliases to a request body, before the allowlist sees it.

Only a top-level `model` (Messages, count_tokens) is replaced: a batch names a model per request
and goes as written, its models checked against the allowlist as they are. The body is re-encoded
only when an alias applies; everything else crosses byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson

from gateway.body import RequestSummary
from tokens.identity import DevicePolicy
from tokens.model_aliases import served_model


@dataclass(frozen=True, slots=True)
class AliasedRequest:
    body: bytes
    summary: RequestSummary
    requested_model: str | None  # set when the alias replaced the model


def apply_model_alias(policy: DevicePolicy, body: bytes, summary: RequestSummary) -> AliasedRequest:
    requested = summary.model
    if not policy.model_aliases or requested is None:
        return AliasedRequest(body, summary, None)
    served = served_model(policy.model_aliases, requested)
    if served == requested:
        return AliasedRequest(body, summary, None)
    parsed = orjson.loads(body)
    parsed["model"] = served
    return AliasedRequest(orjson.dumps(parsed), replace(summary, model=served), requested)
