"""ASGI entry point: Django for HTTP, Channels consumers for the WebSockets."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wizweb.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before the consumers (and the models they import) are imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from chat.consumers import ChatConsumer  # noqa: E402
from documents.consumers import DocumentsConsumer  # noqa: E402
from models_admin.consumers import ModelsConsumer  # noqa: E402
from wizweb.metrics import OpenSocketsGauge  # noqa: E402
from wizweb.origin import SameOriginValidator  # noqa: E402

websocket_urls = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/models/", ModelsConsumer.as_asgi()),
    path("ws/documents/", DocumentsConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OpenSocketsGauge(
            AllowedHostsOriginValidator(
                SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urls)))
            )
        ),
    }
)
