"""The client as a user installs it: the wheel `make clients` builds, installed into a fresh
virtualenv, its `proxyclient` command run from another directory against a live gateway."""
from __future__ import annotations

import email
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from proxyclient import __version__
from tests.servers import BASE_DIR

CLIENT_SOURCE = BASE_DIR / "clients" / "python"


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built as `make clients` builds it, from a copy (parallel runs share no build directory),
    with the pinned setuptools of requirements-dev.txt: no network."""
    work = tmp_path_factory.mktemp("wheel")
    source = shutil.copytree(CLIENT_SOURCE, work / "src", ignore=shutil.ignore_patterns("build", "dist", "*.egg-info"))
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(source)])
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


def test_wheel_declares_its_version_dependencies_and_command(wheel):
    assert wheel.name == f"proxyclient-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(f"proxyclient-{__version__}.dist-info/METADATA"))
        entry_points = archive.read(f"proxyclient-{__version__}.dist-info/entry_points.txt").decode()
    assert metadata["Name"] == "proxyclient" and metadata["Version"] == __version__
    requirements = metadata.get_all("Requires-Dist")
    assert [req for req in requirements if "extra ==" not in req] == ["httpx>=0.27", "cryptography>=42"]
    assert not any("django" in req.lower() for req in requirements)
    assert "proxyclient = proxyclient.cli:run" in entry_points
    assert "proxyclient/cli.py" in names and not any(name.startswith(("tokens/", "gateway/", "tests/")) for name in names)


def test_installed_command_prints_a_token_from_another_directory(fresh_venv, gateway, tmp_path):
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    located = run([str(fresh_venv / "bin" / "python"), "-c", "import proxyclient; print(proxyclient.__file__)"], env=environment, cwd=elsewhere)
    assert Path(located.stdout.strip()).is_relative_to(fresh_venv), located.stdout + located.stderr

    command = [str(fresh_venv / "bin" / "proxyclient"), "--bootstrap-url", f"{gateway.url}/bootstrap", "--home", str(tmp_path / "state")]
    first = run([*command, "--no-keyring", "token"], env=environment, cwd=elsewhere)
    assert (first.returncode, first.stderr) == (0, "")
    token = first.stdout.removesuffix("\n")
    assert token.count(".") == 2 and "\n" not in token
    version = run([*command, "--version"], env=environment, cwd=elsewhere)
    assert version.stdout == f"proxyclient {__version__}\n"
