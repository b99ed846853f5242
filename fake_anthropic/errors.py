"""Errors the fake answers with, in the exact envelope of the real API.

Handlers raise `FakeApiError`; the dispatcher in `app.py` is the one place that turns it into a
response, so every refusal carries the same headers (`request-id`, rate limits) as a success.
"""

from __future__ import annotations

import orjson

# status -> (error type, message the real API uses for it)
ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class FakeApiError(Exception):
    """An error response: HTTP status, Anthropic error type, message and extra headers."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_type, default_message = ERROR_TYPES.get(status, ("api_error", "Internal server error"))
        self.status = status
        self.error_type = error_type or default_type
        self.message = message or default_message
        self.headers = headers or {}
        super().__init__(f"{status} {self.error_type}: {self.message}")


def invalid_request(message: str) -> FakeApiError:
    return FakeApiError(400, message)


def not_found(message: str = "Not Found") -> FakeApiError:
    return FakeApiError(404, message)


def error_envelope(error_type: str, message: str) -> dict[str, object]:
    """The `{"type":"error","error":{...}}` object, as sent in a body or an SSE `event: error`."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_body(error: FakeApiError, request_id: str) -> bytes:
    envelope = error_envelope(error.error_type, error.message)
    envelope["request_id"] = request_id
    return orjson.dumps(envelope)
