"""`make run`'s command on the embedded defaults: demo mode with the fake upstream, an operator
login printed once, a proxied request end to end, and a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.servers import BASE_DIR, free_port


def wait_until_ready(url: str, process: subprocess.Popen, log_path, timeout: float = 60.0) -> None:
    """Until the platform says it is ready, which it says once the gateway and the fake upstream answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the platform exited during start-up"
        if f"Gateway ready: {url}" in log_path.read_text():
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
            return
        time.sleep(0.2)
    raise AssertionError(f"the platform did not say it was ready in time:\n{log_path.read_text()}")


def child_pids(log_path, name: str) -> list[int]:
    marker = f"[run] started {name} (pid "
    return [int(line.split(marker)[1].rstrip(")\n")) for line in log_path.read_text().splitlines() if marker in line]


def kill_child_and_wait_for_its_restart(log_path, name: str, timeout: float = 30.0) -> None:
    """A child that dies is started again; the platform keeps running meanwhile."""
    first = child_pids(log_path, name)
    assert len(first) == 1, log_path.read_text()
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while len(child_pids(log_path, name)) < 2:
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    assert f"[run] {name} exited with code -9; restarting in 1 s (restart 1)" in log_path.read_text()


def test_run_platform_serves_a_demo_request_restarts_a_dead_child_and_stops_cleanly_on_ctrl_c(tmp_path):
    port, fake_port = free_port(), free_port()
    drop = {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "PROMETHEUS_MULTIPROC_DIR",
        "CELERY_BROKER_URL",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(DJANGO_DEBUG="true", VAR_DIR=str(tmp_path), PORT=str(port), FAKE_UPSTREAM_PORT=str(fake_port), LOG_LEVEL="warning")
    output = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_platform"], cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, tmp_path / "run.log")
        deep = httpx.get(url + "/healthz?deep=1", timeout=10).json()
        assert {name: check["status"] for name, check in deep["checks"].items()} == {
            "database": "ok",
            "redis": "ok",
            "cache": "ok",
            "broker": "ok",
            "circuit_breaker": "ok",
        }
        enrolled = httpx.post(url + "/bootstrap", json={"device_id": "run-platform-test", "app_version": "1.0"}, timeout=10)
        assert enrolled.status_code == 200, enrolled.text
        answer = httpx.post(
            url + "/v1/messages",
            headers={"authorization": f"Bearer {enrolled.json()['wrapper_token']}", "anthropic-version": "2023-06-01"},
            json={
                "model": "claude-sonnet-4-5-20250929",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Say hello!"}],
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["content"][0]["text"].startswith("Hello!")
        kill_child_and_wait_for_its_restart(tmp_path / "run.log", "celery-beat")
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    log = (tmp_path / "run.log").read_text()
    assert code == 0, log
    assert "gateway.W001" not in log and "celery@" not in log  # no misleading warning, no Celery banner
    summary = log.index("Gateway ready: " + url)
    assert log.index("[run] started celery-beat") < summary < log.index("[run] stopped gateway"), log
    assert "Login:         admin / " in log[summary:] and "changepassword admin" in log[summary:]
    assert "Demo mode:     the bundled fake Anthropic API" in log[summary:]
    for child in ("fake-upstream", "gateway", "celery-worker", "celery-beat"):
        assert f"[run] stopped {child}" in log


def test_demo_mode_keeps_one_upstream_key_across_restarts(tmp_path):
    from proxyproject.launcher import demo_upstream_key

    first = demo_upstream_key(tmp_path)
    assert first.startswith("sk-ant-demo-") and demo_upstream_key(tmp_path) == first
    assert (tmp_path / "demo-upstream-key").stat().st_mode & 0o777 == 0o600
