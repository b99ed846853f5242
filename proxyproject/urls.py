"""URL map. The API comes first so the seed's /admin/usage and /admin/circuit-breaker win over the
Django admin's own URLs."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import include, path

from proxyproject.api import api


def root(request: HttpRequest) -> HttpResponse:
    """Clients probe the base URL before their first call (Claude Code sends `HEAD /` at launch): a
    plain 200 instead of a logged 404, saying nothing about the deployment."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    return HttpResponse(b"", content_type="text/plain")


urlpatterns = [
    path("", root),
    path("", api.urls),
    path("admin/", admin.site.urls),
    path("oidc/", include("mozilla_django_oidc.urls")),
]
