"""Loaded by pytest (`-p tests.environment`) before Django reads its settings.

Tests run with debug on and development secrets unless the environment says otherwise; CI's second
pass adds DATABASE_URL and REDIS_URL. Logs stay quiet unless LOG_LEVEL is set.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "warning")
os.environ.setdefault("ENROLLMENT_MODE", "open")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-test-master-key-0001")
os.environ.setdefault("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
os.environ.setdefault("REDIS_KEY_PREFIX", f"test-{os.getpid()}-{os.urandom(3).hex()}")
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# Many tests enroll devices from 127.0.0.1; the abuse-limit tests set their own small limits.
os.environ.setdefault("ENROLLMENT_RATE_LIMIT_MAX", "1000000")
# The bundled fake's test knobs cross the gateway in tests only (by default only Anthropic's headers do).
os.environ.setdefault("UPSTREAM_EXTRA_REQUEST_HEADERS", "x-fake-fault,x-fake-stream,x-fake-usage,x-test-probe,x-test-gateway")
