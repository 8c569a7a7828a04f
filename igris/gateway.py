"""One ASGI app that serves every function at the paths API Gateway gives them."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Scope, Send

from igris.routing import load_app, resolve


class LocalGateway:
    """Dispatches each request to the function template.yaml routes it to.

    Function apps are imported on first use, the way a cold Lambda would be. Unmatched
    paths get API Gateway's own 404 body. Serve it with lifespan off, as Mangum runs.
    """

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = resolve(scope.get("method", "GET"), scope["path"])
        if route is None:
            body = json.dumps({"message": "Not Found"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        app = self._apps.get(route.function)
        if app is None:
            app = self._apps[route.function] = load_app(route.function)
        await app(scope, receive, send)
