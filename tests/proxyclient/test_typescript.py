"""The TypeScript client's own tests (`npm test`: Node's built-in runner) against live gateways
started here, with the bundled fake upstream: 24 h tokens and 3.6 s tokens, and two that sign
people in against the test identity provider (by the device grant, and by the code flow with a
loopback redirect for a provider without it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.proxyclient.test_sign_in import (  # noqa: F401
    code_flow_gateway,
    module_people_gateway,
    module_provider,
    people_gateway,
)
from tests.servers import BASE_DIR

PACKAGE = BASE_DIR / "clients" / "typescript"


@pytest.fixture(scope="module")
def npm_installed() -> None:
    """`npm ci` when node_modules is missing (`.ci/run` and `make clients` install it first)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are not installed: the TypeScript client cannot be built or tested")
    if not (PACKAGE / "node_modules" / "typescript").exists():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, capture_output=True, text=True, timeout=600, check=False
        )
        assert installed.returncode == 0, installed.stderr[-2000:]


def test_typescript_client_passes_its_tests_against_live_gateways(
    npm_installed, gateway, short_lived_gateway, people_gateway, code_flow_gateway, upstream
):
    environment = os.environ | {
        "PROXY_TEST_GATEWAY_URL": gateway.url,
        "PROXY_TEST_SHORT_GATEWAY_URL": short_lived_gateway.url,
        "PROXY_TEST_PEOPLE_GATEWAY_URL": people_gateway.url,
        "PROXY_TEST_CODE_FLOW_GATEWAY_URL": code_flow_gateway[0].url,
    }
    result = subprocess.run(
        ["npm", "test"], cwd=PACKAGE, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    counts = {
        name: int(value) for name, value in re.findall(r"^# (tests|pass|fail|skipped|cancelled) (\d+)$", report, re.MULTILINE)
    }
    assert counts["fail"] == counts["skipped"] == counts["cancelled"] == 0, report[-3000:]
    assert counts["pass"] == counts["tests"] >= 20, counts
