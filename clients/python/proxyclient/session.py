"""The current wrapper token of one device, and the one path that renews it: adopt the cache,
refresh when due, fall back to bootstrap when the refresh is refused, and to a person's sign-in
when the gateway enrolls this device only that way (and a presenter can show the sign-in).

Every caller (the app's first launch, the refresh service, the SDK before a request or after a
401, the CLI) goes through `_renew`, which holds a thread lock and the state directory's file lock
and re-reads the cache first: whoever renews first wins and everyone else adopts its token, so no
refresh token is ever sent twice.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .config import ProxyConfig
from .errors import (
    RENEWABLE_ERROR_CODES,
    EnrollmentRateLimited,
    GatewayUnreachable,
    ProxyClientError,
    SignInExpired,
    SignInRequired,
    TokenRejected,
    UnexpectedResponse,
)
from .grant import TokenGrant, format_timestamp
from .keystore import KeyringBackend, system_keyring
from .locking import state_lock
from .loopback import LoopbackReceiver, state_of
from .state import StateStore
from .wire import GatewayApi, check_grant_fresh, describe_duration

log = logging.getLogger("proxyclient")

T = TypeVar("T")

# Refusals that bootstrap would meet as well: falling back cannot help, backing off can.
NOT_WORTH_A_BOOTSTRAP = (GatewayUnreachable, EnrollmentRateLimited)


class TokenSource(enum.Enum):
    CURRENT = "current"  # the token in memory was still good
    CACHE = "cache"  # adopted from the encrypted cache (an earlier launch or another process)
    REFRESH = "refresh"
    BOOTSTRAP = "bootstrap"
    SIGN_IN = "sign_in"


@dataclass(frozen=True, slots=True)
class SignInPrompt:
    """What the person must see to sign in: a URL to open and the code to enter there
    (`verification_uri_complete` carries the code already). For the code flow (a provider without
    the device grant) the URL is the provider's sign-in page and there is no code."""

    verification_uri: str
    verification_uri_complete: str
    user_code: str
    expires_in: float


SignInPresenter = Callable[[SignInPrompt], None]


class ProxySession:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        clock: Callable[[], float] = time.time,
        keyring: KeyringBackend | None = None,
        sign_in_presenter: SignInPresenter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        sign_in_wait: float | None = None,
    ) -> None:
        """`keyring` replaces the system keyring (tests); with `config.use_keyring` off none is used.
        With `sign_in_presenter`, a gateway that enrolls this device only by a person's sign-in gets
        one: the presenter shows the URL and code, the session polls (sleeping with `sleep`), for
        as long as the gateway allows or `sign_in_wait` seconds, whichever is shorter."""
        self.config = config
        self._clock = clock
        self._store = StateStore(config, keyring=(keyring or system_keyring()) if config.use_keyring else None)
        self._api = GatewayApi(config, clock=clock)
        self._lock = threading.Lock()
        self._grant: TokenGrant | None = None
        self._inline_renewal_after = 0.0  # after a failed renewal, requests use the valid token until then
        self._sign_in_presenter = sign_in_presenter
        self._sleep = sleep
        self._sign_in_wait = sign_in_wait

    @property
    def device_id(self) -> str:
        return self._store.device_id

    @property
    def state_dir(self) -> str:
        return str(self._store.directory)

    @property
    def grant(self) -> TokenGrant | None:
        return self._grant

    @property
    def base_url(self) -> str:
        """The gateway root for ANTHROPIC_BASE_URL; obtains a token first if there is none."""
        grant = self._grant or self.renew_if_due()
        return grant.proxy_base_url

    def close(self) -> None:
        self._api.close()

    def cached_grant(self) -> TokenGrant | None:
        """What the cache holds now, without renewing anything (for `status`)."""
        with state_lock(self._store.directory):
            return self._store.load_tokens()

    def check_health(self) -> None:
        self._api.check_health()

    def device_status(self) -> dict[str, Any]:
        """The gateway's view of this device (GET /device); renews a token it calls stale, once."""
        return self._with_fresh_grant(self._api.device_status)

    def model_ids(self) -> list[str]:
        return self._with_fresh_grant(self._api.model_ids)

    def _with_fresh_grant(self, call: Callable[[TokenGrant], T]) -> T:
        grant = self.renew_if_due()
        try:
            return call(grant)
        except TokenRejected as exc:
            if exc.error_code not in RENEWABLE_ERROR_CODES:
                raise
        return call(self.renew_rejected(grant.wrapper_token))

    def refresh_due_in(self) -> float | None:
        """Seconds until the current token should be refreshed; None when there is no token yet."""
        grant = self._grant
        return None if grant is None else grant.refresh_due_in(self._clock(), self.config.refresh_margin)

    def token(self) -> str:
        """A wrapper token to send now. Renews when due; if renewing fails while the current token
        is still valid, that token is used and requests stop trying to renew for `retry_max`
        (the refresh service keeps trying), so a failing /refresh does not slow every request."""
        grant = self._grant
        if self._usable_as_is(grant):
            return grant.wrapper_token  # type: ignore[union-attr]
        try:
            return self.renew_if_due().wrapper_token
        except ProxyClientError as exc:
            now = self._clock()
            if grant is None or grant.is_expired(now):
                raise
            self._inline_renewal_after = now + self.config.retry_max
            log.warning(
                "proxyclient.renewal_deferred: %s; the current token is valid until %s", exc, format_timestamp(grant.expires_at)
            )
            return grant.wrapper_token

    async def atoken(self) -> str:
        """`token` for asyncio apps: no I/O while the token is fresh, else renews in a worker thread."""
        grant = self._grant
        if self._usable_as_is(grant):
            return grant.wrapper_token  # type: ignore[union-attr]
        return await asyncio.to_thread(self.token)

    def _usable_as_is(self, grant: TokenGrant | None) -> bool:
        now = self._clock()
        if grant is None or grant.is_expired(now):
            return False
        return grant.refresh_due_in(now, self.config.refresh_margin) > 0 or now < self._inline_renewal_after

    def ensure_token(self) -> TokenSource:
        """At launch: adopt the cached token, refreshing it if due, or bootstrap."""
        return self._renew(rejected_token=None)[1]

    def renew_if_due(self) -> TokenGrant:
        return self._renew(rejected_token=None)[0]

    def renew_rejected(self, rejected_token: str) -> TokenGrant:
        """After the gateway refused `rejected_token` as expired or revoked: a new token, unless
        another caller already replaced it."""
        return self._renew(rejected_token=rejected_token)[0]

    async def arenew_rejected(self, rejected_token: str) -> TokenGrant:
        return await asyncio.to_thread(self.renew_rejected, rejected_token)

    def _renew(self, *, rejected_token: str | None) -> tuple[TokenGrant, TokenSource]:
        with self._lock, state_lock(self._store.directory):
            source = TokenSource.CURRENT
            stored = self._store.load_tokens()
            if stored is None and self._grant is not None:
                self._store.save_tokens(self._grant)  # the cache was deleted or discarded under us
            elif stored is not None and (self._grant is None or stored.received_at > self._grant.received_at):
                self._grant, source = stored, TokenSource.CACHE
            grant = self._grant
            if (
                grant is not None
                and grant.wrapper_token != rejected_token
                and grant.refresh_due_in(self._clock(), self.config.refresh_margin) > 0
            ):
                return grant, source
            grant, source = self._refresh_or_bootstrap(grant)
            self._store.save_tokens(grant)
            self._grant = grant
        if grant.clock_offset is None:
            check_grant_fresh(grant, now=self._clock())
        elif abs(grant.clock_offset) > self.config.max_clock_skew:
            log.warning("proxyclient.clock_skew: the gateway's clock is %+.0f s from this computer's", grant.clock_offset)
        return grant, source

    def sign_in(self, presenter: SignInPresenter) -> TokenGrant:
        """Sign this device's person in now (`proxyclient login`), whatever token it holds."""
        with self._lock, state_lock(self._store.directory):
            grant = self._signed_in(presenter)
            self._store.save_tokens(grant)
            self._grant = grant
        return grant

    def _signed_in(self, presenter: SignInPresenter) -> TokenGrant:
        with LoopbackReceiver() as receiver:
            started = self._api.sign_in_start(
                device_id=self.device_id, device_secret=self._store.load_device_secret(), redirect_uri=receiver.redirect_uri
            )
            if started.get("flow") == "pkce":
                fresh, generated_secret = self._signed_in_by_code(started, receiver, presenter)
            else:
                fresh, generated_secret = self._signed_in_by_device_grant(started, presenter)
        if generated_secret:
            self._store.save_device_secret(generated_secret)
        log.info("proxyclient.signed_in: device %s, expires %s", self.device_id, format_timestamp(fresh.expires_at))
        return fresh

    def _wait_for(self, started: dict[str, Any]) -> float:
        """How long to wait for the person: the gateway's expiry, or less when the caller cannot wait that long."""
        expires_in = float(started.get("expires_in") or 600)
        return expires_in if self._sign_in_wait is None else min(expires_in, self._sign_in_wait)

    def _not_in_time(self, waited: float) -> SignInExpired:
        return SignInExpired(
            f"The sign-in was not approved within {describe_duration(waited)}.", status=400, error_code="sign_in_expired"
        )

    def _signed_in_by_code(
        self, started: dict[str, Any], receiver: LoopbackReceiver, presenter: SignInPresenter
    ) -> tuple[TokenGrant, str | None]:
        url, expires_in = str(started.get("authorization_url", "")), float(started.get("expires_in") or 600)
        receiver.expect_state(state_of(url))
        presenter(SignInPrompt(verification_uri=url, verification_uri_complete=url, user_code="", expires_in=expires_in))
        redirect = receiver.wait(self._wait_for(started))
        if redirect is None:
            raise self._not_in_time(self._wait_for(started))
        if "code" not in redirect or "state" not in redirect:
            error = redirect.get("error", "no code")
            raise SignInExpired(f"The sign-in did not finish: {error}.", status=400, error_code="sign_in_expired")
        polled = self._api.sign_in_poll(str(started.get("sign_in", "")), code=redirect["code"], state=redirect["state"])
        if isinstance(polled, float):
            raise UnexpectedResponse("The gateway answered a finished code-flow sign-in as pending.")
        return polled

    def _signed_in_by_device_grant(self, started: dict[str, Any], presenter: SignInPresenter) -> tuple[TokenGrant, str | None]:
        expires_in = float(started.get("expires_in") or 600)
        presenter(
            SignInPrompt(
                verification_uri=str(started.get("verification_uri", "")),
                verification_uri_complete=str(started.get("verification_uri_complete") or started.get("verification_uri", "")),
                user_code=str(started.get("user_code", "")),
                expires_in=expires_in,
            )
        )
        deadline = self._clock() + self._wait_for(started)
        while True:
            try:
                polled = self._api.sign_in_poll(str(started.get("sign_in", "")))
            except EnrollmentRateLimited as exc:  # the sign-in goes on: poll again once the gateway allows
                polled = exc.retry_after or 5.0
            if not isinstance(polled, float):
                break
            if self._clock() + polled > deadline:
                raise self._not_in_time(self._wait_for(started))
            self._sleep(polled)
        return polled

    def _refresh_or_bootstrap(self, grant: TokenGrant | None) -> tuple[TokenGrant, TokenSource]:
        if grant is not None and grant.refresh_token_usable(self._clock()):
            try:
                fresh = self._api.refresh(grant)
            except NOT_WORTH_A_BOOTSTRAP:
                raise
            except ProxyClientError as exc:  # refused or unreadable: the device secret may still do
                log.warning("proxyclient.refresh_failed: %s; bootstrapping again", exc)
            else:
                log.info("proxyclient.token_refreshed: device %s, expires %s", self.device_id, format_timestamp(fresh.expires_at))
                return fresh, TokenSource.REFRESH
        try:
            fresh, generated_secret = self._api.bootstrap(
                device_id=self.device_id, device_secret=self._store.load_device_secret()
            )
        except SignInRequired:
            if self._sign_in_presenter is None:
                raise
            return self._signed_in(self._sign_in_presenter), TokenSource.SIGN_IN
        if generated_secret:
            self._store.save_device_secret(generated_secret)
        log.info("proxyclient.token_bootstrapped: device %s, expires %s", self.device_id, format_timestamp(fresh.expires_at))
        return fresh, TokenSource.BOOTSTRAP
