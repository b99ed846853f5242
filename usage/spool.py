"""A local append-only spool of usage records: the queue on the embedded default, and the fallback
when Redis cannot take a record.

Each process appends to its own segment file, holding an exclusive `flock` on it while it is the
writer; sealing a segment releases the lock. Any process may drain a segment it can lock (sealed,
or left by a dead process), and deletes it only after its records are committed. A crash between
commit and delete replays the segment, which the idempotent insert turns into no duplicates.

Segments live in a subdirectory named for the database, so records spooled against one database
(a test run's) are never written into another (the development one).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from proxyproject.lib.logging import log_event

logger = logging.getLogger("usage.spool")
SEGMENT_SUFFIX = ".jsonl"


def spool_directory() -> Path:
    """Keyed by engine and database name only: processes reaching the same database by another
    host or port (a pooler, a replica's primary) share the spool."""
    db = settings.DATABASES["default"]
    identity = f"{db['ENGINE']}|{db['NAME']}"
    return Path(settings.USAGE_SPOOL_DIR) / hashlib.sha256(identity.encode()).hexdigest()[:16]


class _ActiveSegment:
    """This process's open segment; opened on the first append after a seal."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.pid = os.getpid()
        self.directory: Path | None = None
        self.size = 0

    def _open(self, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SEGMENT_SUFFIX}"
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd, self.pid, self.directory, self.size = fd, os.getpid(), directory, 0
        return fd

    def append(self, lines: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        directory = spool_directory()
        with self.lock:
            if self.fd is not None and (self.pid != os.getpid() or self.directory != directory):
                # A forked child shares its parent's segment and must write its own; a segment of
                # another database (tests switch) is sealed and left for that database's drainers.
                os.close(self.fd)
                self.fd = None
            fd = self.fd if self.fd is not None else self._open(directory)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self.size += len(data)

    def seal(self) -> None:
        with self.lock:
            if self.fd is not None and self.pid == os.getpid() and self.size:
                os.close(self.fd)
                self.fd = None


_active = _ActiveSegment()


def append_to_spool(lines: list[bytes]) -> None:
    """Persist encoded records now: a plain write to the page cache, which a process crash cannot undo."""
    _active.append(lines)


def seal_active_segment() -> None:
    """Hand this process's records so far to the drainers (including this process's own)."""
    _active.seal()


@dataclass
class ClaimedSegment:
    path: Path
    fd: int
    lines: list[bytes]

    def acknowledge(self) -> None:
        """Every record is committed: the segment is done."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        os.close(self.fd)


def _read_lines(fd: int, path: Path) -> list[bytes]:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    data = b"".join(chunks)
    lines = data.split(b"\n")
    if lines and lines[-1]:
        # The writer died in the middle of its last write: that record was never whole.
        log_event(logger, "Spool segment ends in a partial record", logging.WARNING, path=str(path), bytes=len(lines[-1]))
    return [line for line in lines[:-1] if line.strip()]


def claim_segments() -> Iterator[ClaimedSegment]:
    """Each segment no live writer holds, oldest first, locked for the caller until released."""
    directory = spool_directory()
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SEGMENT_SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                continue
            raise
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            continue
        yield ClaimedSegment(path, fd, _read_lines(fd, path))


def spooled_segment_count() -> int:
    directory = spool_directory()
    return len(list(directory.glob(f"*{SEGMENT_SUFFIX}"))) if directory.is_dir() else 0
