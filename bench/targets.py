"""What the benchmark runs: the targets (servers under test) and the scenarios (workloads).

Targets: (a) the upstream directly, (b) the bare Django + ninja pass-through, (c) the gateway;
besides, the bare ASGI pass-through (the floor of a proxy that routes /v1 around Django, as the
gateway does), also on every other ASGI server x upstream client pair, for choosing them.
"""

from __future__ import annotations

import math
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import CorePlan, Service, free_port

DIRECT, ASGI, PASSTHROUGH, GATEWAY, VARIANT = "direct", "asgi", "passthrough", "gateway", "variant"
# The gateway's targets (role GATEWAY): `make run`'s embedded stores; production-like stores on one
# worker on its own core (the headline); and, for JSON at 64 connections only, production-like with two
# workers on the proxy's core, and with one and with two workers across both cores (bench/scaling.py
# compares them).
GATEWAY_EMBEDDED, GATEWAY_PRODUCTION = "gateway-embedded", "gateway"
GATEWAY_TWO_WORKERS_ONE_CORE = "gateway-2-workers-one-core"
GATEWAY_ONE_WORKER_SHARED, GATEWAY_TWO_WORKERS = "gateway-1-worker-both-cores", "gateway-2-workers"
TWO_WORKER_SCENARIOS = frozenset({"plain-64"})
# Settings that name a server outside the process: the embedded gateway runs without all of them.
EXTERNAL_STORE_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_CLUSTER",
    "REDIS_KEY_PREFIX",
    "CHANNEL_REDIS_URL",
    "CELERY_BROKER_URL",
)
SERVERS = ("uvicorn", "daphne")
TRANSPORTS = ("gateway", "httpx", "aiohttp")  # see bench/passthrough_settings.py
TRANSPORT_LABELS = {
    "gateway": "gateway's client (httpx over its own transport)",
    "httpx": "httpx default transport",
    "aiohttp": "aiohttp client",
}
MESSAGES_PATH = "/v1/messages"
MODEL = "claude-sonnet-5-5"
PROMPT = "Summarize the plot of a short story about a lighthouse keeper in three sentences."
REALISTIC_STREAM = "events=30,interval_ms=10,first_byte_ms=50"


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    kind: str  # "plain", "stream" or "capacity"
    concurrency: int
    with_variants: bool  # also run against every server x transport bare ASGI pass-through

    @property
    def label(self) -> str:
        if self.kind == "plain":
            return f"JSON, {self.concurrency} conn"
        if self.kind == "stream":
            return f"SSE, {self.concurrency} streams"
        return f"SSE, {self.concurrency} new streams while slow streams are held"


SCENARIOS = (
    Scenario("plain-1", "plain", 1, True),
    Scenario("plain-16", "plain", 16, False),
    Scenario("plain-64", "plain", 64, True),
    Scenario("stream-16", "stream", 16, False),
    Scenario("stream-256", "stream", 256, True),
    Scenario("capacity", "capacity", 16, False),
)


@dataclass
class Target:
    key: str
    role: str  # DIRECT, PASSTHROUGH, GATEWAY or VARIANT
    label: str
    service: Service
    headers: dict[str, str] = field(default_factory=dict)  # the credential this target expects
    unavailable: str = ""  # why it was not measured, when it could not be
    companions: list[Service] = field(default_factory=list)  # processes it needs that serve no requests
    scenarios: frozenset[str] = frozenset()  # the only scenarios it runs in; empty: every one

    @property
    def services(self) -> list[Service]:
        return [self.service, *self.companions]

    @property
    def is_proxy(self) -> bool:
        return self.role != DIRECT


def message_body(*, stream: bool, max_tokens: int = 256) -> bytes:
    stream_field = '"stream":true,' if stream else ""
    return (
        f'{{"model":"{MODEL}","max_tokens":{max_tokens},{stream_field}"messages":[{{"role":"user","content":"{PROMPT}"}}]}}'
    ).encode()


def slow_stream_shape(hold_seconds: float) -> str:
    """One event a second for longer than the capacity phase lasts (it is closed before the end)."""
    return f"events={math.ceil(hold_seconds) + 10},interval_ms=1000,first_byte_ms=0"


@dataclass(frozen=True, slots=True)
class Secrets:
    api_key: str
    jwt_secret: str
    django_secret_key: str

    @classmethod
    def fresh(cls) -> Secrets:
        return cls("sk-ant-bench-" + secrets.token_hex(16), secrets.token_urlsafe(48), secrets.token_urlsafe(64))


def production_environment(base: dict[str, str], var_dir: Path, upstream_url: str, keys: Secrets, port: int) -> dict[str, str]:
    """The project in production mode (debug off) against the benchmark upstream.

    RATE_LIMIT_MAX is raised to 10**9: the benchmark sends tens of thousands of requests a minute
    from one device, and the point is to measure the limiter's cost, not to be refused by it.
    DATABASE_URL and REDIS_URL pass through from `base` when set (PostgreSQL and Redis); otherwise
    SQLite and the per-process backends in a temporary VAR_DIR. Usage records are written by the
    usage writer process, as `make run` and docker-compose run it in production. The benchmark
    upstream's `x-fake-stream` pacing header is let through the gateway's request-header allowlist.
    """
    env = {name: value for name, value in base.items() if name not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env.update(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SETTINGS_MODULE": "proxyproject.settings",
            "JWT_SECRET": keys.jwt_secret,
            "DJANGO_SECRET_KEY": keys.django_secret_key,
            "ENROLLMENT_MODE": "open",
            "ANTHROPIC_BASE_URL": upstream_url,
            "ANTHROPIC_API_KEY": keys.api_key,
            "VAR_DIR": str(var_dir),
            "RATE_LIMIT_MAX": str(10**9),
            "WEB_CONCURRENCY": "1",
            "USAGE_WRITER": "process",
            "UPSTREAM_EXTRA_REQUEST_HEADERS": "x-fake-stream",  # the benchmark upstream's pacing header
            "PYTHONUNBUFFERED": "1",
        }
    )
    return with_port(env, port)


def with_port(env: dict[str, str], port: int) -> dict[str, str]:
    return {**env, "PORT": str(port), "PROXY_BASE_URL": f"http://127.0.0.1:{port}"}


def embedded_environment(production: dict[str, str], var_dir: Path) -> dict[str, str]:
    """`make run`'s stores (SQLite and the in-process backends in a VAR_DIR of its own, usage records
    written by a thread of the gateway) with the production environment's mode, secrets and upstream."""
    env = {name: value for name, value in production.items() if name not in EXTERNAL_STORE_SETTINGS}
    env.update({"VAR_DIR": str(var_dir), "USAGE_WRITER": "thread"})
    return env


def has_production_stores(env: dict[str, str]) -> bool:
    """PostgreSQL and Redis are both named: the production-like gateway can be measured."""
    database = env.get("DATABASE_URL", "")
    return database.split("://", 1)[0] in ("postgres", "postgresql", "pgsql") and bool(env.get("REDIS_URL"))


def server_argv(server: str, application: str, port: int) -> list[str]:
    """One worker process, no access log, uvloop and httptools for uvicorn (as the launcher runs it)."""
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", application]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        application,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--backlog",
        "4096",
        "--log-level",
        "warning",
    ]


def gateway_argv(server: str, port: int) -> list[str]:
    """The gateway as production starts it (proxyproject/server.py: its HTTP limits included), quiet."""
    quiet = ["-v", "0"] if server == "daphne" else ["--backlog", "4096", "--log-level", "warning"]
    return [sys.executable, "-m", "proxyproject.server", "--host", "127.0.0.1", "--port", str(port), *quiet]


def upstream_target(upstream_server: str, keys: Secrets, cores: CorePlan, env: dict[str, str]) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--api-key", keys.api_key, "--server", upstream_server]
    service = Service("upstream", argv, env, port, cores.load)
    return Target(DIRECT, DIRECT, f"direct ({upstream_server} upstream)", service, {"x-api-key": keys.api_key})


def passthrough_target(server: str, transport: str, role: str, cores: CorePlan, env: dict[str, str]) -> Target:
    """The ninja pass-through (role PASSTHROUGH) or the bare ASGI one (role ASGI, or VARIANT for the
    server x transport pairs other than the run's own)."""
    port = free_port()
    service_env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "bench.passthrough_settings",
        "BENCH_PASSTHROUGH_TRANSPORT": transport,
        "PORT": str(port),
    }
    ninja = role == PASSTHROUGH
    application = "bench.passthrough:application" if ninja else "bench.passthrough:asgi_application"
    service = Service(f"{role} {server}+{transport}", server_argv(server, application, port), service_env, port, cores.proxy)
    key = f"{VARIANT}:{server}+{transport}" if role == VARIANT else role
    framework = "bare ninja" if ninja else "bare ASGI"
    return Target(key, role, f"{framework}, {server}, {TRANSPORT_LABELS[transport]}", service)


def usage_writer(env: dict[str, str], cores: CorePlan) -> Service:
    """The usage writer process (USAGE_WRITER=process), beside the upstream and the load."""
    return Service("usage writer", [sys.executable, "manage.py", "run_usage_writer"], env, 0, cores.load)


def gateway_target(
    key: str,
    label: str,
    server: str,
    env: dict[str, str],
    cpus: frozenset[int],
    companions: list[Service],
    scenarios: frozenset[str] = frozenset(),
) -> Target:
    """The gateway as production starts it, on `cpus`, listening on env's PORT."""
    port = int(env["PORT"])
    service = Service(label, gateway_argv(server, port), {**env, "ASGI_SERVER": server}, port, cpus)
    return Target(key, GATEWAY, label, service, companions=companions, scenarios=scenarios)
