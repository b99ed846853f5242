"""The desktop side of the LLM gateway: bootstrap, an encrypted token cache, a health check, a
silent background refresh, and wiring for the Anthropic SDK and Claude Code. Needs httpx and
cryptography; `anthropic` for SDK clients and `keyring` for the OS keyring are optional. Imports
no Django: a desktop app adds it in minutes.

    from proxyclient import ProxyClient

    proxy = ProxyClient.from_environment(app_version="1.4.2").start()
    claude = proxy.anthropic()
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=[...])
"""

from .client import ProxyClient
from .config import ProxyConfig, __version__, load_config
from .errors import (
    BootstrapSecretInvalid,
    ClockSkewError,
    ConfigurationError,
    DeviceBlocked,
    DevicePendingApproval,
    DeviceSecretRejected,
    EnrollmentRateLimited,
    EnrollmentRefused,
    GatewayRefused,
    GatewayUnreachable,
    ProxyClientError,
    RefreshRejected,
    StateUnavailable,
    TokenRejected,
    UnexpectedResponse,
)
from .grant import TokenGrant
from .refresh import AsyncRefreshService, RefreshSchedule, RefreshService
from .session import ProxySession, TokenSource

__all__ = [
    "AsyncRefreshService",
    "BootstrapSecretInvalid",
    "ClockSkewError",
    "ConfigurationError",
    "DeviceBlocked",
    "DevicePendingApproval",
    "DeviceSecretRejected",
    "EnrollmentRateLimited",
    "EnrollmentRefused",
    "GatewayRefused",
    "GatewayUnreachable",
    "ProxyClient",
    "ProxyClientError",
    "ProxyConfig",
    "ProxySession",
    "RefreshRejected",
    "RefreshSchedule",
    "RefreshService",
    "StateUnavailable",
    "TokenGrant",
    "TokenRejected",
    "TokenSource",
    "UnexpectedResponse",
    "__version__",
    "load_config",
]
