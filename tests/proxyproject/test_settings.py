"""Settings come from the environment with the seed's defaults; production refuses weak secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
STRONG_JWT = "j" * 40
STRONG_KEY = "k" * 60


def read_settings(env: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with exactly `env` (plus PATH), print `names` as JSON."""
    code = (
        "import json, os; os.environ['DJANGO_SETTINGS_MODULE']='proxyproject.settings';"
        "from django.conf import settings;"
        f"print(json.dumps({{n: str(getattr(settings, n)) for n in {list(names)!r}}}))"
    )
    clean = {"PATH": os.environ["PATH"], "VAR_DIR": str(BASE_DIR / "var" / "settings-test"), **env}
    return subprocess.run([sys.executable, "-c", code], env=clean, cwd=BASE_DIR, capture_output=True, text=True)


def test_seed_defaults_when_nothing_is_set():
    result = read_settings(
        {"DJANGO_DEBUG": "true"},
        "PORT",
        "PROXY_BASE_URL",
        "JWT_EXPIRATION_HOURS",
        "RATE_LIMIT_MAX",
        "RATE_LIMIT_WINDOW",
        "ENROLLMENT_MODE",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        "CIRCUIT_BREAKER_RESET_TIMEOUT",
        "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
        "CELERY_BROKER_URL",
        "ANTHROPIC_BASE_URL",
        "MAX_REQUEST_BODY_BYTES",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "PORT": "3001",
        "PROXY_BASE_URL": "http://localhost:3001",
        "JWT_EXPIRATION_HOURS": "24.0",
        "RATE_LIMIT_MAX": "100",
        "RATE_LIMIT_WINDOW": "60000",
        "ENROLLMENT_MODE": "open",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "5",
        "CIRCUIT_BREAKER_RESET_TIMEOUT": "30.0",
        "CIRCUIT_BREAKER_SUCCESS_THRESHOLD": "2",
        "CELERY_BROKER_URL": "filesystem://",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
        "MAX_REQUEST_BODY_BYTES": str(32 * 1024 * 1024),
    }


def test_embedded_backends_by_default():
    result = read_settings({"DJANGO_DEBUG": "true"}, "DATABASES", "CACHES", "CHANNEL_LAYERS")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert "sqlite3" in values["DATABASES"]
    assert "LocMemCache" in values["CACHES"]
    assert "InMemoryChannelLayer" in values["CHANNEL_LAYERS"]


def test_redis_and_postgres_urls_switch_backends():
    result = read_settings(
        {"DJANGO_DEBUG": "true", "REDIS_URL": "redis://127.0.0.1:6379/3", "DATABASE_URL": "postgres://u@db.example:5432/gw"},
        "DATABASES",
        "CACHES",
        "CHANNEL_LAYERS",
        "CELERY_BROKER_URL",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert "postgresql" in values["DATABASES"] and "'NAME': 'gw'" in values["DATABASES"]
    assert "django_redis.cache.RedisCache" in values["CACHES"] and "redis://127.0.0.1:6379/3" in values["CACHES"]
    assert "RedisChannelLayer" in values["CHANNEL_LAYERS"]
    assert values["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/3"


def test_a_cluster_url_gives_the_cache_a_cluster_client_and_channels_and_celery_their_own_redis():
    result = read_settings(
        {
            "DJANGO_DEBUG": "true",
            "REDIS_URL": "redis+cluster://10.0.0.5:7000",
            "CHANNEL_REDIS_URL": "redis://10.0.0.9:6379/0",
            "CELERY_BROKER_URL": "redis://10.0.0.9:6379/1",
        },
        "CACHES",
        "CHANNEL_LAYERS",
        "CELERY_BROKER_URL",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert "proxyproject.lib.cache_cluster.ClusterConnectionFactory" in values["CACHES"]
    assert "redis://10.0.0.9:6379/0" in values["CHANNEL_LAYERS"] and "10.0.0.5" not in values["CHANNEL_LAYERS"]
    assert values["CELERY_BROKER_URL"] == "redis://10.0.0.9:6379/1"


def test_a_cluster_without_a_plain_redis_for_celery_or_the_live_feed_refuses_to_start():
    cluster = {"DJANGO_DEBUG": "true", "REDIS_CLUSTER": "true", "REDIS_URL": "redis://10.0.0.5:7000"}
    no_channels = read_settings({**cluster, "CELERY_BROKER_URL": "redis://10.0.0.9:6379/1"}, "CACHES")
    assert no_channels.returncode != 0 and "set CHANNEL_REDIS_URL" in no_channels.stderr
    no_broker = read_settings({**cluster, "CHANNEL_REDIS_URL": "redis://10.0.0.9:6379/0"}, "CACHES")
    assert no_broker.returncode != 0 and "set CELERY_BROKER_URL" in no_broker.stderr


def test_the_usage_queue_is_one_shard_on_a_single_redis_and_sixteen_on_a_cluster():
    plain = read_settings({"DJANGO_DEBUG": "true", "REDIS_URL": "redis://10.0.0.5:6379/0"}, "USAGE_QUEUE_SHARDS")
    cluster = read_settings(
        {
            "DJANGO_DEBUG": "true",
            "REDIS_URL": "redis+cluster://10.0.0.5:7000",
            "CHANNEL_REDIS_URL": "redis://10.0.0.9:6379/0",
            "CELERY_BROKER_URL": "redis://10.0.0.9:6379/1",
        },
        "USAGE_QUEUE_SHARDS",
    )
    assert json.loads(plain.stdout) == {"USAGE_QUEUE_SHARDS": "1"}, plain.stderr
    assert json.loads(cluster.stdout) == {"USAGE_QUEUE_SHARDS": "16"}, cluster.stderr


def test_more_usage_queue_shards_than_writers_drain_are_refused():
    allowed = read_settings({"DJANGO_DEBUG": "true", "USAGE_QUEUE_SHARDS": "32"}, "USAGE_QUEUE_SHARDS")
    assert json.loads(allowed.stdout) == {"USAGE_QUEUE_SHARDS": "32"}, allowed.stderr
    refused = read_settings({"DJANGO_DEBUG": "true", "USAGE_QUEUE_SHARDS": "33"}, "USAGE_QUEUE_SHARDS")
    assert refused.returncode != 0 and "USAGE_QUEUE_SHARDS=33 must be at most 32." in refused.stderr


def test_a_key_prefix_with_a_brace_is_refused():
    result = read_settings({"DJANGO_DEBUG": "true", "REDIS_KEY_PREFIX": "gw{1}"}, "REDIS_KEY_PREFIX")
    assert result.returncode != 0 and "must not hold { or }" in result.stderr


def test_overrides_are_parsed_and_typed():
    result = read_settings(
        {
            "DJANGO_DEBUG": "true",
            "PORT": "8080",
            "RATE_LIMIT_MAX": "7",
            "RATE_LIMIT_WINDOW": "1000",
            "JWT_EXPIRATION_HOURS": "0.5",
        },
        "PORT",
        "RATE_LIMIT_MAX",
        "RATE_LIMIT_WINDOW",
        "JWT_EXPIRATION_HOURS",
        "PROXY_BASE_URL",
    )
    assert json.loads(result.stdout) == {
        "PORT": "8080",
        "RATE_LIMIT_MAX": "7",
        "RATE_LIMIT_WINDOW": "1000",
        "JWT_EXPIRATION_HOURS": "0.5",
        "PROXY_BASE_URL": "http://localhost:8080",
    }


def test_bad_number_is_refused_with_the_variable_name():
    result = read_settings({"DJANGO_DEBUG": "true", "RATE_LIMIT_MAX": "lots"}, "RATE_LIMIT_MAX")
    assert result.returncode != 0
    assert "RATE_LIMIT_MAX='lots' is not an integer." in result.stderr


def test_production_refuses_missing_jwt_secret_and_says_how_to_make_one():
    result = read_settings({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": STRONG_KEY}, "PORT")
    assert result.returncode != 0
    assert "JWT_SECRET is missing or weaker than 32 bytes" in result.stderr
    assert "openssl rand -base64 32" in result.stderr


def test_production_refuses_weak_jwt_secret():
    result = read_settings({"DJANGO_DEBUG": "false", "JWT_SECRET": "short-secret", "DJANGO_SECRET_KEY": STRONG_KEY}, "PORT")
    assert result.returncode != 0
    assert "JWT_SECRET is missing or weaker than 32 bytes" in result.stderr


def test_production_refuses_default_secret_key():
    result = read_settings({"DJANGO_DEBUG": "false", "JWT_SECRET": STRONG_JWT}, "PORT")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is missing, a default" in result.stderr


def test_production_starts_with_strong_secrets_and_defaults_to_secret_enrollment():
    result = read_settings(
        {"DJANGO_DEBUG": "false", "JWT_SECRET": STRONG_JWT, "DJANGO_SECRET_KEY": STRONG_KEY, "BOOTSTRAP_SECRET": "b" * 24},
        "ENROLLMENT_MODE",
        "SESSION_COOKIE_SECURE",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ENROLLMENT_MODE": "secret", "SESSION_COOKIE_SECURE": "True"}


def test_secret_read_from_file(tmp_path):
    secret_file = tmp_path / "jwt"
    secret_file.write_text(STRONG_JWT + "\n")
    result = read_settings({"DJANGO_DEBUG": "true", "JWT_SECRET_FILE": str(secret_file)}, "JWT_SECRET")
    assert json.loads(result.stdout) == {"JWT_SECRET": STRONG_JWT}


def test_dotenv_file_is_read(tmp_path):
    """`.env` in the project root is read, and the real environment wins over it."""
    env_file = BASE_DIR / ".env"
    if env_file.exists():
        import pytest

        pytest.skip("a developer's own .env is present")
    env_file.write_text("RATE_LIMIT_MAX=42\nPORT=4000\n")
    try:
        result = read_settings({"DJANGO_DEBUG": "true", "PORT": "5000"}, "RATE_LIMIT_MAX", "PORT")
    finally:
        env_file.unlink()
    assert json.loads(result.stdout) == {"RATE_LIMIT_MAX": "42", "PORT": "5000"}


def test_a_budget_webhook_without_a_secret_is_refused():
    result = read_settings({"DJANGO_DEBUG": "true", "BUDGET_WEBHOOK_URL": "https://hooks.example/budget"}, "PORT")
    assert result.returncode != 0
    assert "BUDGET_WEBHOOK_URL needs BUDGET_WEBHOOK_SECRET" in result.stderr


def test_a_budget_webhook_that_is_not_http_is_refused():
    env = {"DJANGO_DEBUG": "true", "BUDGET_WEBHOOK_URL": "file:///etc/passwd", "BUDGET_WEBHOOK_SECRET": "s" * 32}
    result = read_settings(env, "PORT")
    assert result.returncode != 0
    assert "BUDGET_WEBHOOK_URL must be an http:// or https:// URL." in result.stderr


def test_the_budget_webhook_secret_is_read_from_a_file(tmp_path):
    secret_file = tmp_path / "budget-webhook"
    secret_file.write_text("w" * 32 + "\n")
    env = {
        "DJANGO_DEBUG": "true",
        "BUDGET_WEBHOOK_URL": "https://hooks.example/budget",
        "BUDGET_WEBHOOK_SECRET_FILE": str(secret_file),
    }
    result = read_settings(env, "BUDGET_WEBHOOK_SECRET", "BUDGET_ALERT_THRESHOLDS", "EMAIL_BACKEND")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "BUDGET_WEBHOOK_SECRET": "w" * 32,
        "BUDGET_ALERT_THRESHOLDS": "50,80,100",
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
    }


def test_enrollment_mode_takes_a_list_with_oidc():
    result = read_settings({"DJANGO_DEBUG": "true", "ENROLLMENT_MODE": " OIDC , secret "}, "ENROLLMENT_MODE")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ENROLLMENT_MODE": "oidc,secret"}


def test_enrollment_mode_refuses_an_unknown_mode():
    result = read_settings({"DJANGO_DEBUG": "true", "ENROLLMENT_MODE": "oidc,saml"}, "ENROLLMENT_MODE")
    assert result.returncode != 0
    assert "ENROLLMENT_MODE='oidc,saml': each mode must be one of open, secret, approval, oidc." in result.stderr


def test_enrollment_mode_refuses_two_bootstrap_modes():
    result = read_settings({"DJANGO_DEBUG": "true", "ENROLLMENT_MODE": "open,approval"}, "ENROLLMENT_MODE")
    assert result.returncode != 0
    assert "ENROLLMENT_MODE: choose at most one of open, secret, approval." in result.stderr


def test_people_sign_in_shares_the_console_issuer_and_client_unless_set_apart():
    names = ("PEOPLE_OIDC_ISSUER", "PEOPLE_OIDC_CLIENT_ID", "PEOPLE_OIDC_CLIENT_SECRET", "PEOPLE_OIDC_SCOPES")
    console = {
        "DJANGO_DEBUG": "true",
        "OIDC_ISSUER": "https://id.example/",
        "OIDC_CLIENT_ID": "console",
        "OIDC_CLIENT_SECRET": "s1",
    }
    shared = read_settings({**console, "PEOPLE_OIDC_ISSUER": ""}, *names)
    assert json.loads(shared.stdout) == {
        "PEOPLE_OIDC_ISSUER": "https://id.example",
        "PEOPLE_OIDC_CLIENT_ID": "console",
        "PEOPLE_OIDC_CLIENT_SECRET": "s1",
        "PEOPLE_OIDC_SCOPES": "openid email profile offline_access",
    }
    apart = read_settings({**console, "PEOPLE_OIDC_CLIENT_ID": "devices"}, *names)
    assert json.loads(apart.stdout)["PEOPLE_OIDC_CLIENT_SECRET"] == ""
