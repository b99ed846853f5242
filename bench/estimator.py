"""What admission by estimate costs a request: `python -m bench.estimator` times the spend
estimator (`usage.spend_estimate`) on Claude Code's ordinary request (100 KB) and on a small one,
with the seeded price table in memory, and prints one JSON line of microseconds per request.

Timed: the prompt estimate and the price lookup, on the body `gateway.body` has already parsed (the
estimate parses nothing again); and, apart, re-encoding a clamped body (only requests the caps
clamp pay it). Only devices with a spend cap pay either. Also the duplicate-key check every Messages
body pays (`gateway.duplicate_keys`, its fast path). `make bench` runs it in its own process, beside the load run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
import time
from collections.abc import Callable

import orjson

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")

ROUNDS = 2000


def _install_seeded_prices() -> None:
    from usage import price_table
    from usage.models import ModelPrice

    seed = importlib.import_module("usage.migrations.0002_seed_model_prices")
    rows = [price_table.row_from_model(ModelPrice(**row)) for row in seed.seed_rows()]
    price_table._cache.table, price_table._cache.loaded_at = price_table.PriceTable(rows), time.monotonic() + 1e9


def _microseconds(work: Callable[[], object]) -> float:
    work()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        work()
    return round((time.perf_counter() - started) / ROUNDS * 1e6, 1)


def measure() -> dict[str, float]:
    import django

    django.setup()
    _install_seeded_prices()
    from gateway.duplicate_keys import refuse_duplicate_top_level_keys
    from tests.usage.claude_code import claude_code_body
    from usage.spend_estimate import clamped_params, estimate_message_cost

    now = dt.datetime.now(dt.UTC)
    results = {}
    small = orjson.dumps({"model": "claude-opus-4-8", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]})
    for name, body in (("claude_code_100kb", claude_code_body()), ("small", small)):
        parsed = orjson.loads(body)
        results[f"estimate_us_{name}"] = _microseconds(
            lambda body=body, parsed=parsed: estimate_message_cost("claude-opus-4-8", parsed, body, now, min_output_tokens=1024)
        )
        results[f"clamp_us_{name}"] = _microseconds(lambda parsed=parsed: orjson.dumps(clamped_params(parsed, 20_000)))
        results[f"duplicate_check_us_{name}"] = _microseconds(
            lambda body=body, parsed=parsed: refuse_duplicate_top_level_keys(body, parsed)
        )
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    print(orjson.dumps(measure()).decode())
