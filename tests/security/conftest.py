"""The security tests reuse the gateway's cast: the fake upstream that records what it received,
devices enrolled through /bootstrap, and the in-process ASGI driver."""
import proxyproject.asgi  # noqa: F401  (Django's logging set up now, not over caplog's handler)
from tests.gateway.conftest import fake_upstream, fresh_breaker_and_pool, token  # noqa: F401
from tests.usage.conftest import live_prices, private_usage_queues, prices  # noqa: F401
