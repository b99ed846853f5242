"""Parsing of /bootstrap and /refresh bodies, with errors that name the field at fault.

Parsed by hand rather than by a schema so that every refusal says exactly what to fix (the client
is a program whose logs a person reads), and so the body limit is checked before JSON is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import orjson
from django.http import HttpRequest

from proxyproject.lib.errors import InvalidRequest, RequestTooLarge
from tokens import device_secrets
from tokens.description import (
    APP_NAME_MAX_LENGTH,
    DEVICE_NAME_MAX_LENGTH,
    OS_MAX_LENGTH,
    DeviceDescription,
    clean_description,
)
from tokens.identifiers import clean_identifier

MAX_BODY_BYTES = 64 * 1024
DEVICE_ID_MAX_LENGTH = 128
APP_VERSION_MAX_LENGTH = 64
REFRESH_TOKEN_MAX_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class BootstrapRequest:
    device_id: str
    app_version: str
    device_secret: str | None
    description: DeviceDescription


def _has_control_characters(value: str) -> bool:
    return any(ord(char) < 32 or 127 <= ord(char) < 160 for char in value)


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(f"body: over {MAX_BODY_BYTES} bytes, the limit for this endpoint.")


def read_json_object(request: HttpRequest, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object. An empty body is `{}` unless `required`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        raise _too_large()
    if not body.strip():
        if required:
            raise InvalidRequest("body: a JSON object is required.")
        return {}
    if request.content_type != "application/json":
        raise InvalidRequest(f"content-type: must be application/json, not {request.content_type or 'missing'}.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body: malformed JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object.")
    return data


@overload
def _string_field(data: dict[str, Any], name: str, *, max_length: int, required: Literal[True], min_length: int = 1) -> str: ...
@overload
def _string_field(data: dict[str, Any], name: str, *, max_length: int, required: bool, min_length: int = 1) -> str | None: ...
def _string_field(data: dict[str, Any], name: str, *, max_length: int, required: bool, min_length: int = 1) -> str | None:
    if name not in data or data[name] is None:
        if required:
            raise InvalidRequest(f"{name}: required.")
        return None
    value = data[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a string.")
    if not value.strip():
        raise InvalidRequest(f"{name}: must not be empty.")
    if len(value) > max_length:
        raise InvalidRequest(f"{name}: must be at most {max_length} characters.")
    if len(value) < min_length:
        raise InvalidRequest(f"{name}: must be at least {min_length} characters.")
    if _has_control_characters(value):
        raise InvalidRequest(f"{name}: must not contain control characters.")
    return value


@overload
def _identifier_field(data: dict[str, Any], name: str, *, max_length: int, required: Literal[True]) -> str: ...
@overload
def _identifier_field(data: dict[str, Any], name: str, *, max_length: int, required: bool) -> str | None: ...
def _identifier_field(data: dict[str, Any], name: str, *, max_length: int, required: bool) -> str | None:
    """A string field that names something (see tokens.identifiers): normalised, then checked."""
    value = _string_field(data, name, max_length=max_length, required=required)
    return None if value is None else clean_identifier(value, field=name, max_length=max_length)


def _description_field(data: dict[str, Any], name: str, *, max_length: int) -> str:
    value = _string_field(data, name, max_length=max_length, required=False)
    return "" if value is None else clean_description(value, field=name, max_length=max_length)


def parse_bootstrap_request(request: HttpRequest) -> BootstrapRequest:
    data = read_json_object(request, required=True)
    return BootstrapRequest(
        device_id=_identifier_field(data, "device_id", max_length=DEVICE_ID_MAX_LENGTH, required=True),
        app_version=_identifier_field(data, "app_version", max_length=APP_VERSION_MAX_LENGTH, required=False) or "",
        device_secret=_string_field(
            data, "device_secret", max_length=device_secrets.MAX_LENGTH, min_length=device_secrets.MIN_LENGTH, required=False
        ),
        description=DeviceDescription(
            device_name=_description_field(data, "device_name", max_length=DEVICE_NAME_MAX_LENGTH),
            app_name=_description_field(data, "app_name", max_length=APP_NAME_MAX_LENGTH),
            os=_description_field(data, "os", max_length=OS_MAX_LENGTH),
        ),
    )


def parse_refresh_token(request: HttpRequest) -> str | None:
    """`refresh_token` from the body, if the client sent one there."""
    data = read_json_object(request, required=False)
    return _string_field(data, "refresh_token", max_length=REFRESH_TOKEN_MAX_LENGTH, required=False)


@dataclass(frozen=True, slots=True)
class SignInStartRequest:
    device: BootstrapRequest
    flow: str | None
    redirect_uri: str | None


@dataclass(frozen=True, slots=True)
class SignInPollRequest:
    handle: str
    code: str | None
    state: str | None


SIGN_IN_FLOWS = ("device", "pkce")
REDIRECT_URI_MAX_LENGTH = 255
HANDLE_MAX_LENGTH = 128
CODE_MAX_LENGTH = 2048


def parse_sign_in_start(request: HttpRequest) -> SignInStartRequest:
    """The /bootstrap fields, and optionally `flow` (device or pkce) and the loopback `redirect_uri`
    the client listens on for the pkce flow."""
    device = parse_bootstrap_request(request)
    data = orjson.loads(request.body)
    flow = _string_field(data, "flow", max_length=8, required=False)
    if flow is not None and flow not in SIGN_IN_FLOWS:
        raise InvalidRequest(f"flow: must be one of {', '.join(SIGN_IN_FLOWS)}.")
    redirect_uri = _string_field(data, "redirect_uri", max_length=REDIRECT_URI_MAX_LENGTH, required=False)
    return SignInStartRequest(device=device, flow=flow, redirect_uri=redirect_uri)


def parse_sign_in_poll(request: HttpRequest) -> SignInPollRequest:
    data = read_json_object(request, required=True)
    return SignInPollRequest(
        handle=_string_field(data, "sign_in", max_length=HANDLE_MAX_LENGTH, required=True),
        code=_string_field(data, "code", max_length=CODE_MAX_LENGTH, required=False),
        state=_string_field(data, "state", max_length=HANDLE_MAX_LENGTH, required=False),
    )
