"""Development keys never outlive development: a var dir first used with debug on keeps the signing
key seeded from the public development JWT_SECRET; with debug off and a real JWT_SECRET that key
neither signs nor verifies, start-up says so in one line with the fix, and `check --deploy` reports
it until `rotate_signing_key` retires it."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest

from tests.servers import BASE_DIR, gateway_process, server_environment
from tests.tokens.client import jwt_parts
from tokens.signing_keys import development_kids

DEVELOPMENT_JWT_SECRET = "dev-insecure-jwt-secret-change-me-0123456789"
FIX = "manage.py rotate_signing_key"


@pytest.fixture
def var_dir_used_in_development(tmp_path):
    """A var dir whose database was created, and whose first signing key was seeded, with debug on;
    then the environment of the same instance in production."""
    common = {
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "FIELD_ENCRYPTION_KEY": secrets.token_urlsafe(32),
        "REDIS_KEY_PREFIX": f"keys-{uuid.uuid4().hex[:8]}",
        "ENROLLMENT_MODE": "open",
        "ENROLLMENT_RATE_LIMIT_MAX": "1000",
    }
    development = {**common, "DJANGO_DEBUG": "true", "JWT_SECRET": "", "DJANGO_SECRET_KEY": ""}
    production = {
        **common,
        "DJANGO_DEBUG": "false",
        "JWT_SECRET": secrets.token_urlsafe(32),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }
    _manage(development, "migrate", "--verbosity", "0")
    return development, production


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in server_environment(**env).items() if value != ""}
    if env.get("JWT_SECRET") == "":
        environment.pop("JWT_SECRET", None)
        environment.pop("DJANGO_SECRET_KEY", None)
    result = subprocess.run([sys.executable, "manage.py", *args], env=environment, cwd=BASE_DIR, capture_output=True, text=True)
    assert result.returncode == 0 or args[0] == "check", result.stdout + result.stderr
    return result


def _started(env: dict[str, str]):
    server = gateway_process(**env)
    for name in [name for name, value in env.items() if value == ""]:
        server.env.pop(name, None)
    return server.start()


def _bootstrap(server, device_id: str) -> dict:
    response = httpx.post(server.url + "/bootstrap", json={"device_id": device_id, "app_version": "1.0"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _forged_wrapper(device_id: str) -> str:
    """What anyone who read the source can sign: a wrapper token under the development default."""
    now = time.time()
    claims = {
        "token_type": "access",
        "exp": int(now) + 3600,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "sub": device_id,
        "fam": uuid.uuid4().hex,
        "policy": {},
    }
    return jwt.encode(claims, DEVELOPMENT_JWT_SECRET, algorithm="HS256", headers={"kid": next(iter(development_kids()))})


def _error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["details"]["error_code"]


def test_development_signing_key_is_not_used_once_debug_is_off(var_dir_used_in_development):
    development, production = var_dir_used_in_development
    debug_server = _started(development)
    try:
        early = _bootstrap(debug_server, "dev-era-laptop")
    finally:
        debug_server.stop()
    development_kid = jwt_parts(early["wrapper_token"])[0]["kid"]
    assert {development_kid} == development_kids()

    server = _started(production)
    try:
        later = _bootstrap(server, "prod-era-laptop")
        old_refresh = httpx.post(server.url + "/refresh", json={"refresh_token": early["refresh_token"]}, timeout=10)
        old_wrapper = httpx.post(
            server.url + "/refresh", headers={"authorization": f"Bearer {early['wrapper_token']}"}, timeout=10
        )
        forged = httpx.post(
            server.url + "/v1/messages",
            timeout=10,
            content=b'{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}',
            headers={"authorization": f"Bearer {_forged_wrapper('prod-era-laptop')}", "content-type": "application/json"},
        )
    finally:
        server.stop()

    assert jwt_parts(later["wrapper_token"])[0]["kid"] != development_kid
    assert _error_code(old_refresh) == (401, "invalid_token")
    assert _error_code(old_wrapper) == (401, "invalid_token")
    assert _error_code(forged) == (401, "invalid_token")
    startup_lines = [line for line in server.log().splitlines() if FIX in line]
    assert len(startup_lines) == 1, server.log()
    assert development_kid in startup_lines[0]


def test_check_deploy_reports_the_development_key_until_it_is_rotated_away(var_dir_used_in_development):
    development, production = var_dir_used_in_development
    _manage(development, "shell", "-c", "from tokens.signing_keys import get_keyring; get_keyring()")

    before = _manage(production, "check", "--deploy")
    assert "tokens.W003" in before.stdout + before.stderr
    assert FIX in before.stdout + before.stderr

    _manage(production, "rotate_signing_key")
    after = _manage(production, "check", "--deploy")
    assert "tokens.W003" not in after.stdout + after.stderr
