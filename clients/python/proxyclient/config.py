"""The client's configuration: the seed's variables (ENABLE_PROXY, PROXY_BOOTSTRAP_URL,
PROXY_HEALTH_URL) from the environment and from a `.env` in the working directory, the real
environment winning, as the seed's desktop app reads them. PROXYCLIENT_APP_NAME,
PROXYCLIENT_APP_VERSION and PROXYCLIENT_DEVICE_NAME (empty: send no device name) describe the
device to the gateway at bootstrap.

Timing knobs (how often the refresh service looks, how early it refreshes, how it backs off) are
constructor arguments rather than variables: apps and tests set them in code, users never need to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .description import host_device_name
from .errors import ConfigurationError

__version__ = "1.1.0"  # the distribution's version (pyproject.toml reads it) and the user agent's

DEFAULT_BOOTSTRAP_URL = "http://localhost:3001/bootstrap"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
APP_DIR_NAME = "proxyclient"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything the client needs; build it with `load_config` or directly (tests, embedding apps)."""

    app_version: str
    app_name: str = ""  # reported at bootstrap with app_version
    device_name: str | None = None  # None: this computer's host name; empty: send none (opted out)
    bootstrap_url: str = DEFAULT_BOOTSTRAP_URL
    health_url: str = ""  # empty: /healthz on the bootstrap URL's host
    enabled: bool = True
    bootstrap_secret: str = ""  # sent as X-Bootstrap-Secret when the gateway runs ENROLLMENT_MODE=secret
    state_dir: Path = Path()  # empty: the platform's user config directory (see default_state_dir)
    use_keyring: bool = True  # False: always the 0600 key file (headless machines, tests)
    check_interval: float = 30 * 60  # the seed: checks expiry every 30 minutes
    refresh_margin: float = 60 * 60  # the seed: refreshes when less than an hour remains
    retry_initial: float = 5.0  # first backoff after a failed renewal, doubled each time
    retry_max: float = 5 * 60
    max_clock_skew: float = 5 * 60  # beyond this the client refuses to trust its own clock
    request_timeout: float = 15.0

    def __post_init__(self) -> None:
        check_http_url("PROXY_BOOTSTRAP_URL", self.bootstrap_url)
        if not self.health_url:
            object.__setattr__(self, "health_url", health_url_for(self.bootstrap_url))
        check_http_url("PROXY_HEALTH_URL", self.health_url)
        if self.state_dir == Path():
            object.__setattr__(self, "state_dir", default_state_dir())
        if self.device_name is None:
            object.__setattr__(self, "device_name", host_device_name())
        if not self.app_version or len(self.app_version) > 64:
            raise ConfigurationError("app_version must be 1 to 64 characters.", hint="Pass your app's version string.")
        for name in ("check_interval", "refresh_margin", "retry_initial", "retry_max", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive.")

    def require_enabled(self) -> None:
        if not self.enabled:
            raise ConfigurationError(
                "Proxy mode is off.", hint="Set ENABLE_PROXY=true in the environment or in .env to route through the gateway."
            )


def load_config(
    app_version: str,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    **overrides: object,
) -> ProxyConfig:
    """Read the variables from `cwd/.env`, then the environment on top; `overrides` (ProxyConfig
    fields) win over both."""
    values = read_dotenv((cwd or Path.cwd()) / ".env")
    values.update(os.environ if environ is None else environ)
    fields: dict[str, object] = {
        "app_version": app_version,
        "app_name": values.get("PROXYCLIENT_APP_NAME", ""),
        "device_name": values.get("PROXYCLIENT_DEVICE_NAME"),
        "enabled": parse_bool("ENABLE_PROXY", values.get("ENABLE_PROXY", "")),
        "bootstrap_url": values.get("PROXY_BOOTSTRAP_URL") or DEFAULT_BOOTSTRAP_URL,
        "health_url": values.get("PROXY_HEALTH_URL", ""),
        "bootstrap_secret": values.get("PROXY_BOOTSTRAP_SECRET", ""),
        "use_keyring": values.get("PROXYCLIENT_KEYRING", "auto").strip().lower() not in ("off", "0", "false", "no"),
    }
    if values.get("PROXYCLIENT_HOME"):
        fields["state_dir"] = Path(values["PROXYCLIENT_HOME"]).expanduser()
    fields.update(overrides)
    return ProxyConfig(**fields)  # type: ignore[arg-type]


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=value` lines, `#` comments, optional `export ` and quotes; a missing file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return {}
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def parse_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean.", hint=f"Use {name}=true or {name}=false.")


def check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name}={url!r} is not an http(s) URL.", hint=f"Set {name} like http://localhost:3001/bootstrap."
        )


def health_url_for(bootstrap_url: str) -> str:
    """`https://host/prefix/bootstrap` -> `https://host/prefix/healthz` (a gateway mounted under a prefix)."""
    parts = urlsplit(bootstrap_url)
    prefix = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{prefix}/healthz", "", ""))


def default_state_dir() -> Path:
    """The per-user config directory where the device id and the encrypted cache live."""
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / APP_DIR_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_DIR_NAME
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / APP_DIR_NAME
