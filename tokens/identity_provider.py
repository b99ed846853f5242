"""The gateway as a relying party of the company's OpenID Connect provider, for people signing in on
their devices: discovery, the provider's signing keys, and the requests to its endpoints.

Everything is asynchronous (httpx), so a slow provider holds no thread the database work needs.
Endpoints come from the issuer's discovery document, kept for DISCOVERY_CACHE_SECONDS. Signing keys
are kept by `kid`; a token naming a kid the cached set lacks refetches the set (at most once per
JWKS_REFETCH_SECONDS), which is how a provider's key rotation is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from django.conf import settings

from proxyproject.lib.errors import IdentityProviderUnavailable
from proxyproject.lib.process_state import register_process_state

DISCOVERY_CACHE_SECONDS = 3600.0
JWKS_REFETCH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """A token or device-authorization endpoint's answer: its JSON body and HTTP status. OAuth
    endpoints answer refusals (authorization_pending, invalid_grant) as 400 with an `error`."""

    status: int
    body: dict[str, Any]

    @property
    def error(self) -> str | None:
        return None if self.status == 200 else str(self.body.get("error") or "invalid_response")


@dataclass(frozen=True, slots=True)
class UserinfoAnswer:
    """The userinfo endpoint's answer. A refusal's reason is in WWW-Authenticate (RFC 6750 3.1:
    `invalid_token`, `insufficient_scope`), not in a body."""

    status: int
    claims: dict[str, Any]
    bearer_error: str


class ProviderCache:
    """`clock` is injectable so tests can move time past JWKS_REFETCH_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.forget()

    def forget(self) -> None:
        self.lock = asyncio.Lock()
        self.issuer = ""
        self.discovery: dict[str, Any] = {}
        self.discovered_at = 0.0
        self.keys: dict[str, jwt.PyJWK] = {}
        self.keys_fetched_at = float("-inf")


provider_cache = ProviderCache()
register_process_state("identity provider", provider_cache.forget)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=settings.OIDC_TIMEOUT, follow_redirects=False)


async def _get_json(url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with _client() as client:
            response = await client.get(url, **kwargs)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise IdentityProviderUnavailable(f"The identity provider did not answer {url}: {type(exc).__name__}.") from exc
    if not isinstance(body, dict):
        raise IdentityProviderUnavailable(f"The identity provider answered {url} with no JSON object.")
    return body


async def provider_metadata() -> dict[str, Any]:
    """The issuer's discovery document; its `issuer` must be the configured one, or a document
    served by someone else could point the gateway at their endpoints."""
    issuer = settings.PEOPLE_OIDC_ISSUER
    async with provider_cache.lock:
        fresh = (
            provider_cache.issuer == issuer and provider_cache.clock() - provider_cache.discovered_at < DISCOVERY_CACHE_SECONDS
        )
        if not fresh:
            document = await _get_json(f"{issuer}/.well-known/openid-configuration")
            if str(document.get("issuer", "")).rstrip("/") != issuer:
                raise IdentityProviderUnavailable("The discovery document names another issuer.")
            provider_cache.issuer, provider_cache.discovery, provider_cache.discovered_at = (
                issuer,
                document,
                provider_cache.clock(),
            )
            provider_cache.keys, provider_cache.keys_fetched_at = {}, float("-inf")
        return provider_cache.discovery


async def endpoint(name: str) -> str | None:
    value = (await provider_metadata()).get(name)
    return str(value) if value else None


async def signing_key(kid: str) -> jwt.PyJWK | None:
    """The provider's public key for `kid`, refetching the key set when it is not among the cached
    ones; None when the provider does not publish it."""
    jwks_uri = await endpoint("jwks_uri")
    if jwks_uri is None:
        raise IdentityProviderUnavailable("The discovery document has no jwks_uri.")
    async with provider_cache.lock:
        if kid not in provider_cache.keys and provider_cache.clock() - provider_cache.keys_fetched_at >= JWKS_REFETCH_SECONDS:
            document = await _get_json(jwks_uri)
            keys = {}
            for entry in document.get("keys", []):
                if isinstance(entry, dict) and entry.get("kid") and entry.get("use", "sig") == "sig":
                    try:
                        keys[str(entry["kid"])] = jwt.PyJWK(entry)
                    except jwt.PyJWKError:
                        continue  # a key type this library cannot use; tokens signed by it are refused
            provider_cache.keys, provider_cache.keys_fetched_at = keys, provider_cache.clock()
        return provider_cache.keys.get(kid)


def _client_credentials() -> dict[str, str]:
    """A confidential client sends its secret in the form (client_secret_post, which every common
    provider accepts); a public client only names itself."""
    form = {"client_id": settings.PEOPLE_OIDC_CLIENT_ID}
    if settings.PEOPLE_OIDC_CLIENT_SECRET:
        form["client_secret"] = settings.PEOPLE_OIDC_CLIENT_SECRET
    return form


async def post_form(url: str, form: dict[str, str]) -> ProviderAnswer:
    try:
        async with _client() as client:
            response = await client.post(url, data={**form, **_client_credentials()}, headers={"accept": "application/json"})
        body = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise IdentityProviderUnavailable(f"The identity provider did not answer: {type(exc).__name__}.") from exc
    if not isinstance(body, dict) or (response.status_code != 200 and "error" not in body):
        raise IdentityProviderUnavailable(f"The identity provider answered {response.status_code} without an OAuth error.")
    return ProviderAnswer(response.status_code, body)


async def token_request(form: dict[str, str]) -> ProviderAnswer:
    url = await endpoint("token_endpoint")
    if url is None:
        raise IdentityProviderUnavailable("The discovery document has no token_endpoint.")
    return await post_form(url, form)


def _bearer_error(challenge: str) -> str:
    match = re.search(r'error="?([A-Za-z_]+)', challenge)
    return match.group(1) if match else ""


async def userinfo(access_token: str) -> UserinfoAnswer | None:
    """What the provider says about the account an access token is for; None when the provider
    publishes no userinfo endpoint. Raises IdentityProviderUnavailable for no answer or a 5xx."""
    url = await endpoint("userinfo_endpoint")
    if url is None:
        return None
    try:
        async with _client() as client:
            response = await client.get(url, headers={"authorization": f"Bearer {access_token}", "accept": "application/json"})
    except httpx.HTTPError as exc:
        raise IdentityProviderUnavailable(f"The identity provider did not answer {url}: {type(exc).__name__}.") from exc
    if response.status_code >= 500:
        raise IdentityProviderUnavailable(f"The identity provider answered {url} with HTTP {response.status_code}.")
    claims: Any = {}
    if response.status_code == 200:
        try:
            claims = response.json()
        except json.JSONDecodeError as exc:
            raise IdentityProviderUnavailable(f"The identity provider answered {url} with no JSON.") from exc
    return UserinfoAnswer(
        response.status_code,
        claims if isinstance(claims, dict) else {},
        _bearer_error(response.headers.get("www-authenticate", "")),
    )
