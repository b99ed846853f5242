"""What a desktop app holds: start it once at launch, ask it for Anthropic clients, stop it at exit.

    proxy = ProxyClient.from_environment(app_version="1.4.2").start()   # or: await proxy.astart()
    claude = proxy.anthropic()                                           # or: proxy.async_anthropic()
    ...
    proxy.stop()                                                         # or: await proxy.astop()

Starting prints the seed's console lines (to stderr; pass `announce=None` to keep quiet).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .config import ProxyConfig, load_config
from .keystore import KeyringBackend
from .refresh import AsyncRefreshService, RefreshService
from .session import ProxySession, SignInPresenter, TokenSource

if TYPE_CHECKING:
    import anthropic

TOKEN_READY_LINES = {
    TokenSource.BOOTSTRAP: "Proxy token bootstrapped successfully",
    TokenSource.REFRESH: "Proxy token refreshed successfully",
    TokenSource.CACHE: "Proxy token loaded from encrypted cache",
    TokenSource.CURRENT: "Proxy token loaded from encrypted cache",
    TokenSource.SIGN_IN: "Signed in; proxy token issued",
}


def announce_to_console(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ProxyClient:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] | None = announce_to_console,
        keyring: KeyringBackend | None = None,
        sign_in_presenter: SignInPresenter | None = None,
    ) -> None:
        """`sign_in_presenter` shows a person the sign-in URL and code when the gateway enrolls this
        device only by signing its person in (an app opens the browser there)."""
        config.require_enabled()
        self.config = config
        self.session = ProxySession(config, clock=clock, keyring=keyring, sign_in_presenter=sign_in_presenter)
        self._announce = announce if announce is not None else (lambda line: None)
        self._service: RefreshService | AsyncRefreshService | None = None

    @classmethod
    def from_environment(cls, app_version: str, *, cwd: Path | None = None, **options: Any) -> ProxyClient:
        """Configuration from ENABLE_PROXY, PROXY_BOOTSTRAP_URL, PROXY_HEALTH_URL (and .env);
        `options` go to the constructor (clock, announce, keyring)."""
        return cls(load_config(app_version, cwd=cwd), **options)

    @property
    def device_id(self) -> str:
        return self.session.device_id

    @property
    def base_url(self) -> str:
        return self.session.base_url

    def token(self) -> str:
        return self.session.token()

    def start(self) -> ProxyClient:
        """Token (cached, refreshed or bootstrapped), health check, then the refresh thread.
        Raises what stops the app from using the gateway (errors.py), with what to do."""
        self._prepare()
        self._start_service(RefreshService(self.session))
        return self

    async def astart(self) -> ProxyClient:
        """`start` for asyncio apps: the blocking part runs in a thread, the service is a task."""
        await asyncio.to_thread(self._prepare)
        self._start_service(AsyncRefreshService(self.session))
        return self

    def stop(self) -> None:
        if isinstance(self._service, AsyncRefreshService):
            raise RuntimeError("started with astart(): stop with `await astop()`")
        if self._service is not None:
            self._service.stop()
            self._service = None
        self.session.close()

    async def astop(self) -> None:
        if isinstance(self._service, RefreshService):
            await asyncio.to_thread(self._service.stop)
        elif self._service is not None:
            await self._service.stop()
        self._service = None
        self.session.close()

    @property
    def refreshing(self) -> bool:
        return self._service is not None and self._service.running

    def anthropic(self, **options: Any) -> anthropic.Anthropic:
        from .sdk import anthropic_client

        return anthropic_client(self.session, **options)

    def async_anthropic(self, **options: Any) -> anthropic.AsyncAnthropic:
        from .sdk import async_anthropic_client

        return async_anthropic_client(self.session, **options)

    def _prepare(self) -> None:
        self._announce("Bootstrapping proxy configuration...")
        source = self.session.ensure_token()
        self._announce(TOKEN_READY_LINES[source])
        self.session.check_health()
        self._announce("Proxy is healthy and ready")

    def _start_service(self, service: RefreshService | AsyncRefreshService) -> None:
        self._announce("Starting proxy token refresh service")
        service.start()
        self._service = service

    def __enter__(self) -> ProxyClient:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> ProxyClient:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.astop()
