"""A separate OS process that submits or drains usage, for the crash and outage tests.

Run as `python -m tests.usage.usage_process <command> <count> <prefix>` with the test's environment
(tests.servers.server_environment). Commands:
  submit                 queue `count` records and exit
  submit-and-drain       queue them, then drain; exit 3 if the drain fails (the database is away)
  drain-and-hang         queue them, drain, and after the first batch commits print `committed` and
                         hang before acknowledging it, so the test can SIGKILL a writer mid-batch
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")

import django  # noqa: E402

django.setup()

from tests.usage.cast import usage_event  # noqa: E402
from usage import writer  # noqa: E402
from usage.writer import drain_usage_queue, submit_usage  # noqa: E402


def submit(count: int, prefix: str) -> None:
    for index in range(count):
        submit_usage(usage_event(request_id=f"{prefix}-{index:04d}", input_tokens=100 + index, output_tokens=10))


def hang_after_first_batch() -> None:
    store = writer.store_payloads

    def store_then_hang(payloads: list[bytes]):
        stored = store(payloads)
        print("committed", len(stored), flush=True)
        sys.stdin.read()
        return stored

    writer.store_payloads = store_then_hang


def main(command: str, count: int, prefix: str) -> int:
    submit(count, prefix)
    if command == "submit":
        return 0
    if command == "drain-and-hang":
        hang_after_first_batch()
    try:
        drain_usage_queue()
    except Exception as exc:
        print("drain failed:", type(exc).__name__, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
