"""The loopback listener of a sign-in by the authorization code flow (RFC 8252 7.3), for identity
providers without the device grant: the browser comes back to http://127.0.0.1:<port>/callback with
the code and state, which the client hands to the gateway (which alone holds the PKCE verifier and
exchanges the code). Bound to 127.0.0.1 on a port the system picks, for one redirect only.

Only the redirect that carries this sign-in's `state` (read from the authorization URL) is taken:
any program on the computer, or a web page the person has open, can send a request to the
listener, and a code of theirs handed to the gateway would sign the device in as someone else (or
spend the sign-in). Other requests are answered 400 and the listener goes on waiting.

Each connection is served on its own thread and given `READ_TIMEOUT_SECONDS` to send its request:
on one thread, a program that connected and sent nothing held the listener, and the browser's
redirect waited behind it until the sign-in expired."""

from __future__ import annotations

import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CALLBACK_PATH = "/callback"
DONE_PAGE = b"<!doctype html><title>Signed in</title><p>You can close this window and return to the application.</p>"
WRONG_STATE_PAGE = b"<!doctype html><title>Not this sign-in</title><p>This is not the sign-in the application started.</p>"
READ_TIMEOUT_SECONDS = 10.0


def state_of(authorization_url: str) -> str:
    """The `state` the gateway put in the authorization URL: the one the redirect must carry back."""
    values = parse_qs(urlsplit(authorization_url).query).get("state") or [""]
    return values[-1]


class LoopbackReceiver:
    def __init__(self) -> None:
        self._received: dict[str, str] | None = None
        self._expected_state = ""
        self._arrived = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{CALLBACK_PATH}"

    def expect_state(self, state: str) -> None:
        """Set once the sign-in started (the listener's address had to be known first)."""
        self._expected_state = state

    def _is_expected(self, query: dict[str, str]) -> bool:
        expected = self._expected_state
        return bool(expected) and hmac.compare_digest(query.get("state", "").encode(), expected.encode())

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
            timeout = READ_TIMEOUT_SECONDS

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != CALLBACK_PATH or receiver._arrived.is_set():
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                query = {name: values[-1] for name, values in parse_qs(url.query).items()}
                if not receiver._is_expected(query):
                    self._page(400, WRONG_STATE_PAGE)
                    return
                receiver._received = query
                receiver._arrived.set()
                self._page(200, DONE_PAGE)

            def _page(self, status: int, page: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        return Handler
