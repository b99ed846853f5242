"""`manage.py check --deploy` passes with the production settings the README documents."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "JWT_SECRET": secrets.token_urlsafe(32),
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "BOOTSTRAP_SECRET": secrets.token_urlsafe(24),
    "ANTHROPIC_API_KEY": "sk-ant-production-check",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "gateway.example.com",
    "BEHIND_HTTPS_PROXY": "true",
    "TRUSTED_PROXIES": "10.0.0.0/8",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_PRELOAD": "true",
}


def run_deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={"PATH": os.environ["PATH"], "VAR_DIR": str(BASE_DIR / "var" / "deploy-check"), **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    )


def test_check_deploy_passes_with_documented_production_settings():
    result = run_deploy_check(PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_without_hsts_and_https_redirect():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k not in ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT")}
    result = run_deploy_check(env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr
