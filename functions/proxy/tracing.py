"""`X-Igris-Trace-Id` on every proxy response (API.md §5), errors and 413s included."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.proxy.pipeline import trace_id_of

TRACE_HEADER = b"x-igris-trace-id"


class TraceIdMiddleware:
    """Takes a well-formed incoming trace id or makes one, keeps it in the request state for
    the pipeline (audit events carry it) and sets it on the response, whoever answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(TRACE_HEADER, b"").decode("latin-1")
        trace_id = trace_id_of(incoming or None)
        scope.setdefault("state", {})["trace_id"] = trace_id

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != TRACE_HEADER
                ]
                message["headers"] = [*headers, (TRACE_HEADER, trace_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_trace)
