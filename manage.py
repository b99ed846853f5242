#!/usr/bin/env python
"""Django's command-line entry point.

A configuration problem or an unreachable or unmigrated database is one line saying what to do,
not a traceback: these are the errors an operator meets first, and the fix is always outside the code.
"""

import os
import sys


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        sys.stderr.write(
            f"manage.py: configuration: {_first_line(error)}\n"
            '  (beside `make run`, run commands as `make manage ARGS="..."`: the same development defaults)\n'
        )
        raise SystemExit(2) from None
    except DatabaseError as error:
        sys.stderr.write(
            f"manage.py: database: {_first_line(error)}\n"
            "  (is DATABASE_URL reachable, and migrated? `make migrate`, or `python manage.py migrate`)\n"
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
