"""`make run`: the whole platform as one foreground command.

Starts the ASGI server, the usage writer (USAGE_WRITER=process), a Celery worker, Celery beat and
(without ANTHROPIC_API_KEY) the bundled fake upstream as child processes, and supervises them: a
child that dies is started again after a back-off that doubles up to a minute (reset once it has
run for a minute), so one crash never takes the whole platform down with it. Ctrl-C or SIGTERM
stops them in dependency order: the gateway first (it stops accepting and lets its streams
finish), then the usage writer (so it flushes what the gateway queued last), then Celery, and the
fake upstream last (streams in flight still need it).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from proxyproject.server import server_argv

RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 60.0
STABLE_AFTER_SECONDS = 60.0
STOP_ORDER = ("gateway", "usage-writer", "celery-beat", "celery-worker", "fake-upstream")


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_FIRST
    restart_at: float | None = None  # set while the child is down, waiting for its back-off
    restarts: int = 0


def platform_children(host: str, demo_key: str | None) -> list[Child]:
    python = sys.executable
    children = []
    if demo_key:
        children.append(
            Child(
                "fake-upstream",
                [
                    python,
                    "manage.py",
                    "fake_anthropic",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(settings.FAKE_UPSTREAM_PORT),
                    "--api-key",
                    demo_key,
                ],
            )
        )
    children.append(Child("gateway", server_argv(host, settings.PORT)))
    if settings.USAGE_WRITER == "process":
        children.append(Child("usage-writer", [python, "manage.py", "run_usage_writer"]))
    children += [
        # --quiet: no banners burying the login and the URLs printed once the gateway answers.
        Child(
            "celery-worker",
            [
                python,
                "-m",
                "celery",
                "--quiet",
                "-A",
                "proxyproject",
                "worker",
                "--loglevel",
                settings.LOG_LEVEL,
                "--concurrency",
                "1",
                "--pool",
                "solo",
            ],
        ),
        Child(
            "celery-beat",
            [
                python,
                "-m",
                "celery",
                "--quiet",
                "-A",
                "proxyproject",
                "beat",
                "--loglevel",
                settings.LOG_LEVEL,
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILE,
            ],
        ),
    ]
    return children


def demo_upstream_key(var_dir: Path) -> str:
    """The fake upstream's key, made once and kept (owner-only) under VAR_DIR: a restart reuses it
    instead of adding another upstream key to the pool and draining the last one."""
    path = var_dir / "demo-upstream-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = "sk-ant-demo-" + secrets.token_hex(16)
    var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def demo_environment() -> tuple[dict[str, str], str | None]:
    """Child environment; in demo mode, the kept demo key shared by the fake upstream and the gateway."""
    env = dict(os.environ)
    if settings.ANTHROPIC_API_KEY:
        return env, None
    demo_key = demo_upstream_key(Path(settings.VAR_DIR))
    env["ANTHROPIC_API_KEY"] = demo_key
    env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{settings.FAKE_UPSTREAM_PORT}"
    return env, demo_key


def start_child(child: Child, env: dict[str, str]) -> None:
    # Own process group: the terminal's Ctrl-C reaches only us, and we stop children in order.
    child.process = subprocess.Popen(child.argv, env=env, start_new_session=True)
    child.started_at = time.monotonic()
    child.restart_at = None
    print(f"[run] started {child.name} (pid {child.process.pid})", flush=True)


def schedule_restart(child: Child, code: int, now: float) -> None:
    """A child that ran for a while starts again after the first back-off; one that keeps dying
    waits twice as long each time, so a crash loop does not spin the machine."""
    if now - child.started_at >= STABLE_AFTER_SECONDS:
        child.backoff = RESTART_BACKOFF_FIRST
    child.restart_at = now + child.backoff
    child.restarts += 1
    print(f"[run] {child.name} exited with code {code}; restarting in {child.backoff:g} s (restart {child.restarts})", flush=True)
    child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)


def accepts_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def answers_health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=0.5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def supervise(
    children: list[Child], env: dict[str, str], grace_seconds: float, announce_once_ready: Callable[[], bool] | None = None
) -> int:
    """Runs until Ctrl-C or SIGTERM. `announce_once_ready` is called every tick until it returns
    True (it prints the summary once the gateway answers, after the children's start-up lines)."""
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in children:
        start_child(child, env)
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    start_child(child, env)
                continue
            code = child.process.poll()
            if code is not None:
                schedule_restart(child, code, now)
        if announce_once_ready is not None and announce_once_ready():
            announce_once_ready = None
        time.sleep(0.2)
    stop_children(children, grace_seconds)
    return 0


def stop_children(children: list[Child], grace_seconds: float) -> None:
    """One child at a time, in STOP_ORDER, each given the grace period before it is killed."""
    order = {name: index for index, name in enumerate(STOP_ORDER)}
    for child in sorted(children, key=lambda child: order.get(child.name, len(order))):
        if not child.process:
            continue
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        print(f"[run] stopped {child.name}", flush=True)
