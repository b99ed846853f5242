"""A separate OS process firing concurrent spend reservations, for the cross-process cap test.

Run as `python -m tests.usage.spend_process <device_pk> <daily cap> <reserve> <count> <settle>` with
the test's environment. Prints `ready`, waits for a line on stdin (so several processes fire at
once), reserves `count` times concurrently, settles each success at `settle`, and prints
`reserved=<n> refused=<m>`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")

import django  # noqa: E402

django.setup()

from django.db import connections  # noqa: E402

from proxyproject.lib.errors import SpendCapReached  # noqa: E402
from tests.usage.cast import identity_with  # noqa: E402
from usage.spend import reserve_spend, settle_spend  # noqa: E402


async def fire(device_pk: int, cap: Decimal, amount: Decimal, count: int, actual: Decimal) -> tuple[int, int]:
    identity = identity_with(device_pk=device_pk, device_daily=cap)

    async def one(index: int) -> bool:
        try:
            reservation = await reserve_spend(identity, amount, f"req-{os.getpid()}-{index}")
        except SpendCapReached:
            return False
        await settle_spend(reservation, actual)
        return True

    results = await asyncio.gather(*(one(index) for index in range(count)))
    return sum(results), count - sum(results)


def main() -> None:
    device_pk, cap, amount, count, actual = sys.argv[1:6]
    print("ready", flush=True)
    sys.stdin.readline()
    reserved, refused = asyncio.run(fire(int(device_pk), Decimal(cap), Decimal(amount), int(count), Decimal(actual)))
    connections.close_all()  # a clean goodbye: the test database can be dropped right after we exit
    print(f"reserved={reserved} refused={refused}", flush=True)


if __name__ == "__main__":
    main()
