"""The loopback listener of a sign-in by the authorization code flow (RFC 8252 7.3), for identity
providers without the device grant: the browser comes back to http://127.0.0.1:<port>/callback with
the code and state, which the client hands to the gateway (which alone holds the PKCE verifier and
exchanges the code). Bound to 127.0.0.1 on a port the system picks, for one redirect only."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CALLBACK_PATH = "/callback"
DONE_PAGE = b"<!doctype html><title>Signed in</title><p>You can close this window and return to the application.</p>"


class LoopbackReceiver:
    def __init__(self) -> None:
        self._received: dict[str, str] | None = None
        self._arrived = threading.Event()
        self._server = HTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{CALLBACK_PATH}"

    def wait(self, timeout: float) -> dict[str, str] | None:
        """The redirect's query (code and state, or the provider's error), or None after `timeout`."""
        self._arrived.wait(timeout)
        return self._received

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != CALLBACK_PATH or receiver._arrived.is_set():
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                receiver._received = {name: values[-1] for name, values in parse_qs(url.query).items()}
                receiver._arrived.set()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(DONE_PAGE)))
                self.end_headers()
                self.wfile.write(DONE_PAGE)

        return Handler
