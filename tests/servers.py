"""Real servers for tests: the gateway as a separate process on a free port, sharing the test
database (and Redis, when configured) with the test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the test database this process uses, for servers started in other processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def server_environment(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server instance keeps its own metrics files
    env["DATABASE_URL"] = test_database_url()
    env.setdefault("REDIS_KEY_PREFIX", settings.REDIS_KEY_PREFIX)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@dataclass
class ServerProcess:
    argv: list[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /healthz within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def gateway_process(server: str = "uvicorn", **env_overrides: str) -> ServerProcess:
    """A gateway server process (not yet started) on a free port, started as production starts it."""
    port = free_port()
    argv = [sys.executable, "-m", "proxyproject.server", "--host", "127.0.0.1", "--port", str(port)]
    env_overrides.setdefault("ASGI_SERVER", server)
    return ServerProcess(
        argv, server_environment(PORT=str(port), PROXY_BASE_URL=f"http://127.0.0.1:{port}", **env_overrides), port
    )


def celery_worker_process(**env_overrides: str) -> subprocess.Popen:
    """A Celery worker on the test's broker and database, without the cluster chatter that slows a
    single test worker's start (gossip, mingle, heartbeat)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "proxyproject",
        "worker",
        "--pool",
        "solo",
        "--loglevel",
        "warning",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return subprocess.Popen(
        argv, cwd=BASE_DIR, env=server_environment(**env_overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
