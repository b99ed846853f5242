"""Loaded by pytest (`-p tests.environment`) before Django reads its settings.

Tests run with debug on and development secrets unless the environment says otherwise; CI's second
pass adds DATABASE_URL and REDIS_URL. Logs stay quiet unless LOG_LEVEL is set.
"""

import os
from pathlib import Path

os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "warning")
os.environ.setdefault("ENROLLMENT_MODE", "open")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-test-master-key-0001")
os.environ.setdefault("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
os.environ.setdefault("REDIS_KEY_PREFIX", f"test-{os.getpid()}-{os.urandom(3).hex()}")
# Under pytest-xdist every worker inherits the controller's environment: each gets its own Redis keys
# (the Celery broker's too) and its own var directory (the filesystem broker, metrics), as a run of its own.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    os.environ["REDIS_KEY_PREFIX"] = f"{os.environ['REDIS_KEY_PREFIX']}-{_worker}"
    os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / f"xdist-{_worker}"))
    Path(os.environ["VAR_DIR"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# Many tests enroll devices from 127.0.0.1; the abuse-limit tests set their own small limits.
os.environ.setdefault("ENROLLMENT_RATE_LIMIT_MAX", "1000000")
# The bundled fake's test knobs cross the gateway in tests only (by default only Anthropic's headers do).
os.environ.setdefault("UPSTREAM_EXTRA_REQUEST_HEADERS", "x-fake-fault,x-fake-stream,x-fake-usage,x-test-probe,x-test-gateway")
