"""How the key commands take a secret: from standard input (typed without echo at a terminal, or
piped) or from an environment variable the operator names, never from an argument, which would
land in shell history and in the process list."""

from __future__ import annotations

import getpass
import os
from typing import TextIO

from django.core.management.base import CommandError, CommandParser


def add_secret_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--from-env",
        metavar="VARIABLE",
        help="Read the secret from this environment variable instead of standard input.",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="Skip the upstream call (GET /v1/models) that checks the key works before it serves.",
    )


def read_secret(*, from_env: str | None, stdin: TextIO) -> str:
    if from_env:
        # The operator names the variable on purpose: this is the command's input, not a setting.
        value = os.environ.get(from_env, "")
        if not value.strip():
            raise CommandError(f"The environment variable {from_env} is not set or empty.")
        return value
    if stdin.isatty():
        value = getpass.getpass("Upstream API key (not echoed): ")
    else:
        value = stdin.read()
    if not value.strip():
        raise CommandError("No secret on standard input. Pipe it in (e.g. from a secrets manager) or use --from-env VARIABLE.")
    return value
