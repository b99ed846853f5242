"""Websocket routes served by channels (the operators' live dashboard)."""
from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
