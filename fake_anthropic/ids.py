"""Object ids shaped like the API's (`msg_01...`, `req_011C...`): a prefix and base62 noise.

`random`, not `secrets`: these ids name fake objects and must be cheap on the hot path.
"""

from __future__ import annotations

import random
import string

ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 22) -> str:
    return prefix + "".join(random.choices(ALPHABET, k=length))
