"""Running the fake: on the caller's event loop (`serve`, `async with`), or in a thread of its own
(`start_in_thread`, `with`) so synchronous tests and the SDK's sync client can talk to it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import TracebackType

from aiohttp import web

from .app import FakeApi
from .request_log import RecordedRequest

SHUTDOWN_GRACE_SECONDS = 0.5  # in-flight streams get this long when the fake stops
KEYS_ENV_VAR = "FAKE_ANTHROPIC_API_KEYS"  # comma-separated; read by the entry points, not here


def api_keys_from(arguments: Iterable[str] | None, environment_value: str) -> list[str]:
    """Keys named in `FAKE_ANTHROPIC_API_KEYS` (its value passed in) and on the command line."""
    keys = [key.strip() for key in environment_value.split(",") if key.strip()]
    return keys + [key for key in arguments or [] if key]


def connectable_host(host: str) -> str:
    """The address a client on this machine dials for `host` (a wildcard is not dialable)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class FakeAnthropic:
    """A fake Anthropic API on a real socket. `port=0` picks a free port; see `base_url`."""

    def __init__(
        self,
        api_keys: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        organization_id: str | None = None,
        max_logged_requests: int = 10_000,
        batch_processing_seconds: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api = FakeApi(
            api_keys=api_keys,
            organization_id=organization_id,
            max_logged_requests=max_logged_requests,
            batch_processing_seconds=batch_processing_seconds,
        )
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The root clients use as `ANTHROPIC_BASE_URL` (no `/v1`)."""
        if not self.api.base_url:
            raise RuntimeError("the fake Anthropic API is not listening yet")
        return self.api.base_url

    @property
    def organization_id(self) -> str:
        return self.api.organization_id

    @property
    def requests(self) -> list[RecordedRequest]:
        """What was received so far, oldest first (the last `max_logged_requests`)."""
        return self.api.request_log.snapshot()

    def clear_requests(self) -> None:
        self.api.request_log.clear()

    def set_api_keys(self, api_keys: Iterable[str]) -> None:
        """Replace the accepted keys at once (one reference swap: safe from any thread)."""
        self.api.api_keys = frozenset(api_keys)

    def set_forbidden_api_keys(self, api_keys: Iterable[str]) -> None:
        """Keys (among the known ones) answered 403 permission_error on every endpoint."""
        self.api.forbidden_api_keys = frozenset(api_keys)

    async def start(self) -> None:
        """Listen on the running event loop; returns once the socket accepts connections."""
        listener = socket.create_server((self.host, self.port), family=self._address_family(), backlog=1024)
        self.port = listener.getsockname()[1]
        self.api.base_url = f"http://{connectable_host(self.host)}:{self.port}"
        self._runner = web.AppRunner(self.api.application(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
        await self._runner.setup()
        await web.SockSite(self._runner, listener).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self, until: asyncio.Event | None = None, on_listening: Callable[[str], None] | None = None) -> None:
        """Listen until `until` is set (or forever, until cancelled), then close cleanly."""
        await self.start()
        if on_listening is not None:
            on_listening(self.base_url)
        try:
            await (until or asyncio.Event()).wait()
        finally:
            await self.close()

    def start_in_thread(self) -> FakeAnthropic:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("the fake Anthropic API is already running")
        loop = asyncio.new_event_loop()
        listening = threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the starting thread, which raises it
                failures.append(exc)
                listening.set()
                loop.close()
                return
            listening.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        listening.wait()
        if failures:
            self._thread.join()
            self._thread = self._loop = None
            raise failures[0]
        return self

    def stop(self) -> None:
        """Stop a fake started with `start_in_thread` and wait until its socket is closed."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = self._loop = None

    def _address_family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __enter__(self) -> FakeAnthropic:
        return self.start_in_thread()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def run_until_signalled(fake: FakeAnthropic, announce: Callable[[str], None]) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then close cleanly (the command's loop)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await fake.serve(stop, lambda base_url: announce(f"fake Anthropic API listening on {base_url} (Ctrl-C to stop)"))

    asyncio.run(main())
