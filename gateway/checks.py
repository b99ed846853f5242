"""System checks for the gateway (ids asserted by tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Warning, register

from gateway.keypool import upstream_key_configured
from proxyproject.lib.backends import shared_state_backend


@register()
def check_upstream_key(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if not upstream_key_configured():
        return [
            Warning(
                "No upstream API key: every /v1 request will be refused with 503 no_upstream_key.",
                hint="Set ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE) or run manage.py add_upstream_key, "
                "or point ANTHROPIC_BASE_URL at the fake upstream for a demo.",
                id="gateway.W001",
            )
        ]
    return []


@register()
def check_shared_limits(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if shared_state_backend() == "local":
        return [
            Warning(
                "No REDIS_URL: rate limits and the circuit breaker are kept per process, so each gateway process "
                "enforces its own limits and opens its own breaker.",
                hint="Set REDIS_URL when running more than one gateway process or host.",
                id="gateway.W002",
            )
        ]
    return []
