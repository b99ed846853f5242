"""`python -m fake_anthropic --port 4010 --api-key KEY`: the fake without Django (benchmarks).

Keys also come from FAKE_ANTHROPIC_API_KEYS (comma-separated), as for `manage.py fake_anthropic`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .server import KEYS_ENV_VAR, FakeAnthropic, api_keys_from, run_until_signalled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_anthropic", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4010, help="0 picks a free port")
    parser.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY", help="repeatable")
    arguments = parser.parse_args(argv)
    keys = api_keys_from(arguments.api_keys, os.environ.get(KEYS_ENV_VAR, ""))
    if not keys:
        parser.error(f"no API key: pass --api-key KEY or set {KEYS_ENV_VAR}")
    fake = FakeAnthropic(api_keys=keys, host=arguments.host, port=arguments.port)
    run_until_signalled(fake, lambda line: print(line, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
