"""Settings of the bare pass-through: the project's settings, its own URLconf, no middleware.

No middleware on purpose: the pass-through is the framework's floor (Django's ASGI handler, URL
resolution and one ninja operation), the least any view of this project can cost, so the gateway's
own work (auth, policy, usage) shows as the difference. `BENCH_PASSTHROUGH_TRANSPORT` picks the
upstream client: `gateway` (the gateway's own: httpx over its HTTP/1.1 transport), `httpx` (httpx's
default transport) or `aiohttp` (aiohttp's client directly); the benchmark sets it per server.
"""

from proxyproject.settings import *  # noqa: F401,F403  (the project's settings, then the overrides below)
from proxyproject.settings import env_choice

ROOT_URLCONF = "bench.passthrough"
MIDDLEWARE: list[str] = []
BENCH_PASSTHROUGH_TRANSPORT = env_choice("BENCH_PASSTHROUGH_TRANSPORT", "gateway", ("gateway", "httpx", "aiohttp"))
