"""One renewal at a time per state directory, across threads and processes: the app's refresh
service and Claude Code's `python -m proxyclient token` share the cache, and two of them sending
the same single-use refresh token would look like theft to the gateway (it revokes the family)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "state.lock"

if os.name == "nt":
    import msvcrt

    def lock_file(fd: int) -> None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # gives up after ~10 s; keep waiting
                return
            except OSError:
                continue

    def unlock_file(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def lock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def unlock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Exclusive while held. Each call opens the file anew, so threads of one process exclude
    each other too (flock belongs to the open file description, not the process)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock_file(fd)
        try:
            yield
        finally:
            unlock_file(fd)
    finally:
        os.close(fd)
