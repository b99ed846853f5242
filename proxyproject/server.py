"""The one command line that serves the gateway: `python -m proxyproject.server --host H --port P [server options]`.

`make run` (proxyproject/launcher.py), the Docker image, docker-compose, the benchmark and the tests'
live servers all start the gateway through here, so the HTTP limits and timeouts of
proxyproject/http_limits.py, read from settings, are the same wherever it runs. Options the caller
adds after host and port (e.g. `--backlog 4096`) go to the server unchanged.

With ASGI_SERVER=daphne the limits are daphne's own (it has no header-size or header-count limit):
uvicorn is the production server.
"""

from __future__ import annotations

import argparse
import os
import sys

APPLICATION = "proxyproject.asgi:application"
LIMITED_PROTOCOL = "proxyproject.http_limits:LimitedHttpToolsProtocol"


def server_argv(host: str, port: int, extra: list[str] | None = None) -> list[str]:
    """The server's command line, from settings."""
    from django.conf import settings

    python = sys.executable
    if settings.ASGI_SERVER == "daphne":
        return [python, "-m", "daphne", "-b", host, "-p", str(port), *(extra or []), APPLICATION]
    return [
        python,
        "-m",
        "uvicorn",
        APPLICATION,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(settings.WEB_CONCURRENCY),
        "--loop",
        "uvloop",
        "--http",
        LIMITED_PROTOCOL,
        "--lifespan",
        "on",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        str(int(settings.SHUTDOWN_GRACE_SECONDS)),
        "--timeout-keep-alive",
        str(settings.HTTP_KEEP_ALIVE_TIMEOUT_SECONDS),
        # The client's address is read from forwarding headers by proxyproject.lib.client_address, and
        # only from TRUSTED_PROXIES; uvicorn's own reading trusts 127.0.0.1 by default.
        "--no-proxy-headers",
        *(extra or []),
    ]


def main(argv: list[str] | None = None) -> None:
    """Replaces this process with the server, so signals and the process id are the server's own."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
    from django.conf import settings

    parser = argparse.ArgumentParser(prog="python -m proxyproject.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: the PORT setting")
    options, extra = parser.parse_known_args(argv)
    command = server_argv(options.host, options.port or settings.PORT, extra)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
