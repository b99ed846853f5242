"""gzip the way the real API does it: JSON, error and SSE bodies, only when the client accepts it.

The SSE encoder flushes after every event (Z_SYNC_FLUSH) so a gzip stream still arrives event by
event; a gateway that decodes incrementally must see each event as soon as it is sent.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

GZIP_CONTAINER = 16  # added to zlib's window bits, selects the gzip container
GZIP_LEVEL = 6
# A whole body is compressed with a window no larger than itself and a small memLevel: the output
# is the same size or nearly, and setting up the compressor costs a fifth (it dominated small bodies).
SMALL_BODY_MEM_LEVEL = 4


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    """True when `accept-encoding` lists gzip (or `*`) without `q=0`. Cached: clients repeat it."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                if float(quality[2:]) == 0:
                    continue
            except ValueError:
                continue
        return True
    return False


def gzip_bytes(body: bytes) -> bytes:
    window_bits = min(15, max(10, len(body).bit_length()))
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_CONTAINER + window_bits, SMALL_BODY_MEM_LEVEL)
    return compressor.compress(body) + compressor.flush()


class GzipEventEncoder:
    """Compresses an event stream piece by piece; each piece is decodable on arrival."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_CONTAINER + 15)

    def encode(self, event: bytes) -> bytes:
        return self._compressor.compress(event) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class IdentityEventEncoder:
    def encode(self, event: bytes) -> bytes:
        return event

    def finish(self) -> bytes:
        return b""


EventEncoder = GzipEventEncoder | IdentityEventEncoder
