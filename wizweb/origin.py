"""A WebSocket origin check that holds even when ALLOWED_HOSTS is "*" (the LAN default).

AllowedHostsOriginValidator accepts any origin once ALLOWED_HOSTS is a wildcard, which would let
any web page a user visits open a socket with their session cookie. A browser always sends
`Origin` on a WebSocket, so we also require it to name the very host the socket was opened on.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier


class SameOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            headers = dict(scope.get("headers", []))
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            if not origin or not host or urlsplit(origin).netloc.lower() != host.lower():
                denier = WebsocketDenier()
                return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
