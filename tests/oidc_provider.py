"""A small OpenID Connect provider on 127.0.0.1 for the sign-in tests: discovery, the authorization
code flow with PKCE (S256), the device authorization grant (RFC 8628), refresh tokens, userinfo and a
JWKS whose keys can rotate. An authorization-code sign-in is approved at once for `person`; a device
grant waits until the test (or a browser opening the verification URL) approves it. The knobs make it
misbehave the ways a relying party must refuse (another audience or issuer, an expired token, another
flow's nonce, a key the JWKS does not publish), disable an account, as an administrator would (in
each of the ways providers show that to a relying party), or fail as a provider in an outage does
(a 503, or no answer in time)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict[str, Any]:
        return {**json.loads(RSAAlgorithm.to_jwk(self.private.public_key())), "kid": self.kid, "alg": "RS256", "use": "sig"}


@dataclass
class DeviceGrant:
    device_code: str
    user_code: str
    nonce: str | None
    scope: str
    claims: dict[str, Any] | None = None  # set when approved
    denied: bool = False


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str | None
    claims: dict[str, Any]
    scope: str = ""


class OIDCProvider:
    def __init__(self, client_id: str = "gateway-console", client_secret: str = "console-secret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.keys = [SigningKey("key-1")]
        self.person: dict[str, Any] = {
            "sub": "alice-0001",
            "email": "alice@example.com",
            "email_verified": True,
            "given_name": "Alice",
            "groups": ["llm-gateway-operators"],
        }
        self.audience: str | None = None
        self.issuer_claim: str | None = None
        self.lifetime = 300
        self.nonce_override: str | None = None
        self.unpublished_key: SigningKey | None = None
        self.forged_algorithm: str | None = None  # "none", or "HS256" keyed with a published key's kid
        self.token_endpoint_down = False
        self.grants: dict[str, Grant] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.nonces_seen: list[str] = []
        self.device_grant_offered = True
        self.interval = 5
        self.device_grants: dict[str, DeviceGrant] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.disabled_subjects: set[str] = set()  # refresh tokens refused: invalid_grant
        self.refused_at_userinfo: set[str] = set()  # refresh tokens honoured, userinfo 401 invalid_token
        self.inactive_subjects: set[str] = set()  # refresh tokens honoured, userinfo `active: false`
        self.userinfo_down = False
        self.token_delay_seconds = 0.0  # before the token endpoint answers: a hung provider
        self.userinfo_delay_seconds = 0.0
        self.token_requests: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> OIDCProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def rotate_keys(self) -> None:
        """A new signing key; the old one stays published for tokens already out, as providers do."""
        self.keys.append(SigningKey(f"key-{len(self.keys) + 1}"))

    def discovery(self) -> dict[str, Any]:
        device = {"device_authorization_endpoint": f"{self.issuer}/device_authorization"} if self.device_grant_offered else {}
        return {
            **device,
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def authorize(self, query: dict[str, str]) -> str:
        """The redirect back to the client, with a code for the current person."""
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            query["client_id"],
            query["redirect_uri"],
            query.get("nonce"),
            query.get("code_challenge"),
            dict(self.person),
            query.get("scope", ""),
        )
        if query.get("nonce"):
            self.nonces_seen.append(query["nonce"])
        return f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"

    def _client_ok(self, form: dict[str, str]) -> bool:
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    def start_device_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not self._client_ok(form):
            return 401, {"error": "invalid_client"}
        grant = DeviceGrant(
            secrets.token_urlsafe(24), f"{secrets.randbelow(10**8):08d}", form.get("nonce"), form.get("scope", "")
        )
        self.device_grants[grant.user_code] = grant
        if grant.nonce:
            self.nonces_seen.append(grant.nonce)
        return 200, {
            "device_code": grant.device_code,
            "user_code": grant.user_code,
            "verification_uri": f"{self.issuer}/device",
            "verification_uri_complete": f"{self.issuer}/device?{urlencode({'user_code': grant.user_code})}",
            "expires_in": 600,
            "interval": self.interval,
        }

    def approve(self, user_code: str | None = None) -> None:
        """The person enters the code (the latest one unless named) and approves, as `person` now."""
        grant = self.device_grants[user_code] if user_code else list(self.device_grants.values())[-1]
        grant.claims = dict(self.person)

    def deny(self) -> None:
        list(self.device_grants.values())[-1].denied = True

    def disable_account(self, shown_as: str = "invalid_grant") -> None:
        """An administrator disables the person. How a relying party learns it differs by provider:
        `invalid_grant`, the common way, their refresh tokens stop working; `userinfo`, refresh
        tokens keep being renewed until they expire but the userinfo endpoint refuses the account's
        access tokens (401 invalid_token); `inactive`, userinfo answers the account with `active: false`."""
        subjects = {
            "invalid_grant": self.disabled_subjects,
            "userinfo": self.refused_at_userinfo,
            "inactive": self.inactive_subjects,
        }[shown_as]
        subjects.add(self.person["sub"])

    def userinfo(self, access_token: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, claims and headers, as RFC 6750 has a resource server refuse a token."""
        claims = self.access_tokens.get(access_token)
        if claims is None or claims["sub"] in self.refused_at_userinfo:
            return 401, {}, {"www-authenticate": 'Bearer error="invalid_token", error_description="The access token is invalid"'}
        if claims["sub"] in self.inactive_subjects:
            return 200, {**claims, "active": False}, {}
        return 200, claims, {}

    def _tokens(self, claims: dict[str, Any], client_id: str, nonce: str | None, scope: str) -> dict[str, Any]:
        access_token = secrets.token_urlsafe(24)
        self.access_tokens[access_token] = claims
        answer = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(Grant(client_id, "", nonce, None, claims)),
        }
        if "offline_access" in scope.split():
            refresh_token = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh_token] = claims
            answer["refresh_token"] = refresh_token
        return answer

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        grant_type = form.get("grant_type")
        if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
            return self.poll_device_grant(form)
        if grant_type == "refresh_token":
            return self.refresh(form)
        return self.exchange(form)

    def poll_device_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not self._client_ok(form):
            return 401, {"error": "invalid_client"}
        grant = next((g for g in self.device_grants.values() if g.device_code == form.get("device_code")), None)
        if grant is None:
            return 400, {"error": "expired_token"}
        if grant.denied:
            return 400, {"error": "access_denied"}
        if grant.claims is None:
            return 400, {"error": "authorization_pending"}
        del self.device_grants[grant.user_code]
        return 200, self._tokens(grant.claims, form["client_id"], grant.nonce, grant.scope)

    def refresh(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        claims = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if not self._client_ok(form) or claims is None or claims["sub"] in self.disabled_subjects:
            return 400, {"error": "invalid_grant"}
        return 200, self._tokens(claims, form["client_id"], None, "offline_access")

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self.grants.pop(form.get("code", ""), None)
        if grant is None or not self._client_ok(form):
            return 400, {"error": "invalid_grant"}
        if grant.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != grant.code_challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        return 200, self._tokens(grant.claims, grant.client_id, grant.nonce, grant.scope)

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            **grant.claims,
            "iss": self.issuer_claim or self.issuer,
            "aud": self.audience or grant.client_id,
            "iat": now,
            "exp": now + self.lifetime,
        }
        if self.nonce_override or grant.nonce:
            claims["nonce"] = self.nonce_override or grant.nonce
        key = self.unpublished_key or self.keys[-1]
        if self.forged_algorithm == "none":
            return jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid})
        if self.forged_algorithm is not None:
            return jwt.encode(
                claims, "a-guessable-secret-of-32-bytes!!", algorithm=self.forged_algorithm, headers={"kid": key.kid}
            )
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _unavailable(self) -> None:
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {name: values[-1] for name, values in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif url.path == "/jwks":
                    self._json(200, {"keys": [key.public_jwk() for key in provider.keys]})
                elif url.path == "/authorize":
                    self.send_response(302)
                    self.send_header("location", provider.authorize(query))
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif url.path == "/device":
                    provider.approve(query.get("user_code"))
                    self._json(200, {"approved": True})
                elif url.path == "/userinfo" and provider.userinfo_down:
                    self._unavailable()
                elif url.path == "/userinfo":
                    time.sleep(provider.userinfo_delay_seconds)
                    self._json(*provider.userinfo(self.headers.get("authorization", "").removeprefix("Bearer ").strip()))
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = {name: values[-1] for name, values in parse_qs(self.rfile.read(length).decode()).items()}
                path = urlsplit(self.path).path
                if path == "/token" and provider.token_endpoint_down:
                    self._unavailable()
                elif path == "/token":
                    time.sleep(provider.token_delay_seconds)
                    self._json(*provider.token(form))
                elif path == "/device_authorization":
                    self._json(*provider.start_device_grant(form))
                else:
                    self._json(404, {"error": "not_found"})

        return Handler
