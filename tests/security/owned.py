"""Creating and naming batches and files through the gateway, for the ownership and spend tests."""

from __future__ import annotations

import orjson

from tests.gateway.conftest import bearer, call_gateway

BOUNDARY = "owned-test-boundary"


def batch_body(count: int = 1, *, model: str = "claude-sonnet-4-5", max_tokens: int = 64) -> bytes:
    return orjson.dumps(
        {
            "requests": [
                {
                    "custom_id": f"r{index}",
                    "params": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Say hello"}]},
                }
                for index in range(count)
            ]
        }
    )


def file_body(content: bytes = b"hello, file") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\nContent-Type: text/plain\r\n\r\n'.encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def file_headers(token: str) -> dict[str, str]:
    return {
        **bearer(token),
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "anthropic-beta": "files-api-2025-04-14",
    }


async def create_batch(token: str, **shape: object) -> str:
    answer = await call_gateway("POST", "/v1/messages/batches", headers=bearer(token), body=batch_body(**shape))
    assert answer.status == 200, answer.body
    return orjson.loads(answer.body)["id"]


async def upload_file(token: str, content: bytes = b"hello, file") -> str:
    answer = await call_gateway("POST", "/v1/files", headers=file_headers(token), body=file_body(content))
    assert answer.status == 200, answer.body
    return orjson.loads(answer.body)["id"]


def listed_ids(body: bytes) -> list[str]:
    return [item["id"] for item in orjson.loads(body)["data"]]


def not_found_shape(body: bytes) -> tuple[str, str, list[str]]:
    """(envelope type, error type, the error's keys): the upstream's not-found envelope, plus our details."""
    parsed = orjson.loads(body)
    return parsed["type"], parsed["error"]["type"], sorted(parsed["error"])
