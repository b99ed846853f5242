"""ASGI entry point: HTTP to Django, websockets (the gateway's own origin only, then staff sessions)
to channels consumers, and the lifespan hooks of the apps."""

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proxyproject.settings")
# The admin's static files are served by the same process (a prefix check for every other path),
# so a single container needs no separate web server.
django_asgi_app = ASGIStaticFilesHandler(get_asgi_application())

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry loaded above)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gateway.asgi import mount_proxy  # noqa: E402
from proxyproject.lib.lifespan import lifespan_app  # noqa: E402
from proxyproject.lib.logging import skip_unprinted_record_fields  # noqa: E402
from proxyproject.routing import websocket_urlpatterns  # noqa: E402
from proxyproject.websocket_origin import ExactOriginValidator  # noqa: E402

skip_unprinted_record_fields()
application = ProtocolTypeRouter(
    {
        # /v1/* goes straight to the proxy, without Django's handler and middleware (gateway/asgi.py).
        "http": mount_proxy(django_asgi_app),
        "lifespan": lifespan_app,
        "websocket": ExactOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
