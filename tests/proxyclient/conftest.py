"""Live gateways for the desktop client's tests, and a client configuration per test (its own
state directory, the file key store, fast refresh timings)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic
from proxyclient import ProxyConfig
from tests.servers import BASE_DIR, ServerProcess, gateway_process
from tokens.models import AuditEvent

# Enrollment is rate limited per client IP and every test enrolls from 127.0.0.1; on Redis the
# limit is shared by all the gateways of the test run. Revocation is checked on every /v1 request.
GATEWAY_ENV = {
    "ENROLLMENT_RATE_LIMIT_MAX": "100000",
    "ENROLLMENT_MODE": "open",
    "RATE_LIMIT_MAX": "100000",
    "REVOCATION_CACHE_SECONDS": "0",
}
SHORT_LIVED_HOURS = "0.001"  # 3.6 s wrapper tokens: the refresh falls due 1.8 s after issue
FAKE_UPSTREAM_KEY = "sk-ant-test-master-key-0001"


def start_gateway(**env: str) -> ServerProcess:
    return gateway_process(**{**GATEWAY_ENV, **env}).start()


@pytest.fixture(scope="package")
def package_upstream() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys={FAKE_UPSTREAM_KEY}) as fake:
        yield fake


@pytest.fixture
def upstream(package_upstream) -> FakeAnthropic:
    package_upstream.clear_requests()
    return package_upstream


def gateway_to(upstream: FakeAnthropic, **env: str) -> Iterator[ServerProcess]:
    server = start_gateway(ANTHROPIC_BASE_URL=upstream.base_url, ANTHROPIC_API_KEY=FAKE_UPSTREAM_KEY, **env)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def package_gateway(django_db_setup, package_upstream) -> Iterator[ServerProcess]:
    """One gateway process for all of this package's tests (starting one costs seconds). It
    survives the flush between transactional tests: it reseeds its signing key from JWT_SECRET
    with the same kid, and every test enrolls devices of its own."""
    yield from gateway_to(package_upstream)


@pytest.fixture(scope="package")
def package_short_lived_gateway(django_db_setup, package_upstream) -> Iterator[ServerProcess]:
    yield from gateway_to(package_upstream, JWT_EXPIRATION_HOURS=SHORT_LIVED_HOURS)


@pytest.fixture
def gateway(package_gateway, transactional_db) -> ServerProcess:
    return package_gateway


@pytest.fixture
def short_lived_gateway(package_short_lived_gateway, transactional_db) -> ServerProcess:
    return package_short_lived_gateway


def client_config(server_url: str, state_dir: Path, **overrides: object) -> ProxyConfig:
    fields: dict[str, object] = {
        "app_version": "9.8.7",
        "bootstrap_url": f"{server_url}/bootstrap",
        "state_dir": state_dir,
        "use_keyring": False,
        "check_interval": 0.1,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "request_timeout": 5.0,
    }
    fields.update(overrides)
    return ProxyConfig(**fields)  # type: ignore[arg-type]


class ConsoleLines(list):
    """Collects what ProxyClient announces, in order."""

    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def console() -> ConsoleLines:
    return ConsoleLines()


def audit_kinds(device_id: str) -> list[str]:
    """What the device did on the gateway, in order, from the audit trail in the shared test
    database: one row per bootstrap, refresh, detected reuse and operator action."""
    return list(AuditEvent.objects.filter(device_ref=device_id).order_by("occurred_at", "id").values_list("kind", flat=True))


CLIENT_SOURCE = BASE_DIR / "clients" / "python"


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built as `make clients` builds it, from a copy (parallel runs share no build directory),
    with the pinned setuptools of requirements-dev.txt: no network."""
    work = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(CLIENT_SOURCE, work / "src", ignore=shutil.ignore_patterns("build", "dist", "*.egg-info"))
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work / "dist"),
            str(source),
        ]
    )
    assert built.returncode == 0, built.stderr
    (wheel_path,) = (work / "dist").glob("proxyclient-*.whl")
    return wheel_path


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new virtualenv with only the wheel installed; its dependencies (httpx, cryptography) come
    from the test environment's site-packages through a .pth file, since the machine may have no
    package index. The repository's source tree is on no path of it."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    created = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "test-environment-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return venv
