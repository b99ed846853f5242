"""`make run`: the whole platform as one foreground command.

Starts the ASGI server, the usage writer (USAGE_WRITER=process), a Celery worker, Celery beat and
(without ANTHROPIC_API_KEY) the bundled fake upstream as child processes; Ctrl-C or SIGTERM stops them all, and if one dies the rest are stopped
too, so the operator never sees a half-running platform.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings

from proxyproject.server import server_argv


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)


def platform_children(host: str, demo_key: str | None) -> list[Child]:
    python = sys.executable
    children = []
    if demo_key:
        children.append(Child("fake-upstream", [python, "manage.py", "fake_anthropic", "--host", "127.0.0.1", "--port", str(settings.FAKE_UPSTREAM_PORT), "--api-key", demo_key]))
    children.append(Child("gateway", server_argv(host, settings.PORT)))
    if settings.USAGE_WRITER == "process":
        children.append(Child("usage-writer", [python, "manage.py", "run_usage_writer"]))
    children += [
        Child("celery-worker", [python, "-m", "celery", "-A", "proxyproject", "worker", "--loglevel", settings.LOG_LEVEL, "--concurrency", "1", "--pool", "solo"]),
        Child("celery-beat", [python, "-m", "celery", "-A", "proxyproject", "beat", "--loglevel", settings.LOG_LEVEL, "--schedule", settings.CELERY_BEAT_SCHEDULE_FILE]),
    ]
    return children


def demo_environment() -> tuple[dict[str, str], str | None]:
    """Child environment; in demo mode, a fresh key shared by the fake upstream and the gateway."""
    env = dict(os.environ)
    if settings.ANTHROPIC_API_KEY:
        return env, None
    demo_key = "sk-ant-demo-" + secrets.token_hex(16)
    env["ANTHROPIC_API_KEY"] = demo_key
    env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{settings.FAKE_UPSTREAM_PORT}"
    return env, demo_key


def supervise(children: list[Child], env: dict[str, str], grace_seconds: float) -> int:
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in children:
        # Own process group: the terminal's Ctrl-C reaches only us, and we stop children in order.
        child.process = subprocess.Popen(child.argv, env=env, start_new_session=True)
        print(f"[run] started {child.name} (pid {child.process.pid})", flush=True)
    exit_code = 0
    while not stopping:
        for child in children:
            code = child.process.poll()
            if code is not None:
                print(f"[run] {child.name} exited with code {code}; stopping the platform", flush=True)
                exit_code = code or 1
                stopping = True
                break
        time.sleep(0.2)
    stop_children(children, grace_seconds)
    return exit_code


def stop_children(children: list[Child], grace_seconds: float) -> None:
    for child in reversed(children):
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in reversed(children):
        if not child.process:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        print(f"[run] stopped {child.name}", flush=True)
