"""What one hot-path Redis command costs: `python -m bench.redis_client` runs the rate limiter's
script 3,000 times in a row on REDIS_URL (default the local Redis), through redis-py's asyncio
client configured as the gateway configures it (blocking pool, retry, health checks) and through
the lean client (`proxyproject.lib.resp_client`), on uvloop, and prints one JSON line of CPU
microseconds per command (medians of 3 runs each, interleaved). CPU time, not wall time: on a
shared machine it moves less.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import orjson
import uvloop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

COMMANDS = 3000
RUNS = 3


async def _cpu_microseconds(command: Callable[[], Awaitable[object]]) -> float:
    for _ in range(200):
        await command()
    started = time.process_time()
    for _ in range(COMMANDS):
        await command()
    return (time.process_time() - started) / COMMANDS * 1e6


async def measure() -> dict[str, float]:
    import django

    django.setup()
    from proxyproject.lib.ratelimit.redis import _HIT
    from proxyproject.lib.redis import get_async_redis, redis_key
    from proxyproject.lib.resp_client import get_resp_client

    keys = [redis_key("rl", "bench-redis-client")]
    args = ["", 1_000_000_000, 60_000, 1]
    shared = get_async_redis()
    lean = get_resp_client()
    if shared is None or lean is None:
        raise SystemExit("needs REDIS_URL naming a single Redis over redis:// or unix://")
    registered = shared.register_script(_HIT.source)
    samples: dict[str, list[float]] = {"redis_py_us": [], "lean_us": []}
    for _ in range(RUNS):
        samples["redis_py_us"].append(await _cpu_microseconds(lambda: registered(keys=keys, args=args)))
        samples["lean_us"].append(await _cpu_microseconds(lambda: lean.run_script(_HIT, keys, args)))
    await shared.delete(*keys)
    results = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    results["saved_us"] = round(results["redis_py_us"] - results["lean_us"], 1)
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    print(orjson.dumps(uvloop.run(measure())).decode())
