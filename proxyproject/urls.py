"""URL map. The API comes first so the seed's /admin/usage and /admin/circuit-breaker win over the
Django admin's own URLs."""
from django.contrib import admin
from django.urls import path

from proxyproject.api import api

urlpatterns = [
    path("", api.urls),
    path("admin/", admin.site.urls),
]
