"""The client as a user installs it: the wheel `make clients` builds, installed into a fresh
virtualenv, its `proxyclient` command run from another directory against a live gateway."""

from __future__ import annotations

import email
import zipfile
from pathlib import Path

from proxyclient import __version__
from tests.proxyclient.conftest import run


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
    located = run(
        [str(fresh_venv / "bin" / "python"), "-c", "import proxyclient; print(proxyclient.__file__)"],
        env=environment,
        cwd=elsewhere,
    )
    assert Path(located.stdout.strip()).is_relative_to(fresh_venv), located.stdout + located.stderr

    command = [
        str(fresh_venv / "bin" / "proxyclient"),
        "--bootstrap-url",
        f"{gateway.url}/bootstrap",
        "--home",
        str(tmp_path / "state"),
    ]
    first = run([*command, "--no-keyring", "token"], env=environment, cwd=elsewhere)
    assert (first.returncode, first.stderr) == (0, "")
    token = first.stdout.removesuffix("\n")
    assert token.count(".") == 2 and "\n" not in token
    version = run([*command, "--version"], env=environment, cwd=elsewhere)
    assert version.stdout == f"proxyclient {__version__}\n"
