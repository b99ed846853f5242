"""Websocket routes served by channels (the operators' live dashboard)."""

from django.urls import URLPattern, path

from usage.consumers import UsageLiveConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/usage/live/", UsageLiveConsumer.as_asgi()),
]
