"""What the client tells the gateway about this device at bootstrap, so operators can tell devices
apart: a device name (the host name unless the user opts out), the app's name and version, the OS.

The gateway refuses text it would not show (control characters, markup, a leading formula sign,
over-long values), and a refused bootstrap would leave the user without a token over a cosmetic
field. So the host name and OS are cleaned here to what the gateway accepts; values the app or
user chose are sent as they are, and a bad one is reported with the gateway's reason.
"""

from __future__ import annotations

import platform
import socket
import unicodedata

DEVICE_NAME_MAX_CHARS = 100
OS_MAX_CHARS = 64
REFUSED_CHARACTERS = frozenset('<>"`')
FORMULA_PREFIXES = ("=", "+", "-", "@")


def clean_description(value: str, max_chars: int) -> str:
    """`value` reduced to what the gateway accepts: printable, without markup, trimmed, bounded."""
    kept = "".join(char for char in unicodedata.normalize("NFC", value) if char.isprintable() and char not in REFUSED_CHARACTERS)
    return kept.strip().lstrip("".join(FORMULA_PREFIXES)).strip()[:max_chars].strip()


def host_device_name() -> str:
    """This computer's host name without a domain (`ada-laptop.local` -> `ada-laptop`)."""
    return clean_description(socket.gethostname().split(".")[0], DEVICE_NAME_MAX_CHARS)


def operating_system() -> str:
    """`macOS 15.1`, `Windows 11`, `Linux 6.8.0-45-generic`: the family and its release."""
    system = platform.system()
    if system == "Darwin":
        name, release = "macOS", platform.mac_ver()[0]
    else:
        name, release = system or "unknown", platform.release()
    return clean_description(f"{name} {release}", OS_MAX_CHARS)
