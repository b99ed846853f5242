"""The one NinjaAPI: app routers mounted at the seed's exact paths, and every exception handler."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Router, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.renderers import BaseRenderer

from gateway.api import router as gateway_router
from proxyproject.health import run_health_checks
from proxyproject.lib.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound, error_response
from proxyproject.operator_surface import docs_for_operators, health_summary, sees_health_details
from tokens.api import router as tokens_router
from usage.api import router as usage_router
from usage.device_api import router as device_router


class OrjsonRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request: HttpRequest, data: object, *, response_status: int) -> bytes:
        return orjson.dumps(data, default=str)


api = NinjaAPI(
    title="LLM gateway",
    version="1.0",
    description="Wrapper-token issuance, the /v1 Anthropic proxy, usage and operations.",
    renderer=OrjsonRenderer(),
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    # Swagger UI from this server's static files ("ninja" in INSTALLED_APPS), no CDN, no remote validator.
    docs=Swagger(settings={"validatorUrl": None}),
    docs_decorator=docs_for_operators,
    urls_namespace="gateway-api",
)

health_router = Router(tags=["health"])


@health_router.get(
    "/healthz", auth=None, summary="Liveness; ?deep=1 also checks database, cache, broker, breaker (details for operators)"
)
async def healthz(request: HttpRequest, deep: bool = False) -> HttpResponse:
    status, body = await run_health_checks(deep)
    if deep and not await sees_health_details(request):
        body = health_summary(body)
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


api.add_router("", health_router)
api.add_router("", tokens_router)
api.add_router("", usage_router)
api.add_router("", device_router)
api.add_router("", gateway_router)


@api.exception_handler(GatewayError)
def handle_gateway_error(request: HttpRequest, exc: GatewayError) -> HttpResponse:
    return error_response(exc, getattr(request, "gateway_request_id", None))


@api.exception_handler(ValidationError)
def handle_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "payload", "query"))
    message = f"{field}: {first.get('msg', 'invalid value')}" if field else str(first.get("msg", "invalid request"))
    return error_response(InvalidRequest(message))


@api.exception_handler(AuthenticationError)
def handle_ninja_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(AuthenticationFailed())


@api.exception_handler(HttpError)
def handle_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 404:
        return error_response(NotFound(str(exc)))
    error = InvalidRequest(str(exc))
    error.status = exc.status_code
    return error_response(error)
