"""The usage writer process for USAGE_WRITER=process: writes every gateway worker's queued usage
records to the database until SIGTERM or Ctrl-C, then writes what is left and exits."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand

from usage.writer import run_usage_writer


class Command(BaseCommand):
    help = "Write queued usage records to the database continuously (the USAGE_WRITER=process writer)."

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_usage_writer(stop)
