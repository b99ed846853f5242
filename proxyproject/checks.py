"""System checks for the platform's edge (ids asserted by tests)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_trusted_proxies(app_configs, **kwargs) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    everyone = [str(network) for network in settings.TRUSTED_PROXIES if network.prefixlen == 0]
    if everyone:
        messages.append(
            Warning(
                f"TRUSTED_PROXIES holds {', '.join(everyone)}: every client can choose its own address with a "
                "forwarding header, past the enrollment limits and into the audit trail.",
                hint="List only the load balancers' addresses or subnets.",
                id="proxyproject.W001",
            )
        )
    if settings.SECURE_PROXY_SSL_HEADER and not settings.TRUSTED_PROXIES:
        messages.append(
            Warning(
                "BEHIND_HTTPS_PROXY is on but TRUSTED_PROXIES is empty: every client has the load balancer's "
                "address, so all of them share one enrollment limit and the audit trail names the balancer.",
                hint="Set TRUSTED_PROXIES to the load balancers' addresses or subnets (e.g. 10.0.0.0/8).",
                id="proxyproject.W002",
            )
        )
    return messages
