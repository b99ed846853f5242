"""GET /device: a device asks, with its own wrapper token, what the gateway thinks of it."""

from __future__ import annotations

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import Router

from tokens.authentication import authenticate_wrapper_token, extract_bearer_token
from usage.device_report import device_report

router = Router(tags=["device"])


@router.get("/device", auth=None, summary="The calling device's status, effective policy and spend this day and month")
async def device_status(request: HttpRequest) -> HttpResponse:
    identity = await authenticate_wrapper_token(extract_bearer_token(request.headers) or "")
    response = HttpResponse(orjson.dumps(await sync_to_async(device_report)(identity)), content_type="application/json")
    response["cache-control"] = "no-store"
    return response
