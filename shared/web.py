"""The FastAPI app factory and the Mangum handler factory every HTTP function uses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from mangum import Mangum
from pydantic import BaseModel
from sqlalchemy import text
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import public_guard
from shared.config import get_settings
from shared.db import SessionDep
from shared.errors import (
    PayloadTooLarge,
    error_response,
    install_error_handlers,
    unexpected_error_response,
)
from shared.ids import new_id
from shared.logs import logger

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Request ids, the body size limit and per-request log keys (plain ASGI, no buffering).

    - `X-Request-Id`: echo a well-formed incoming one, else generate; on every response.
    - Bodies over the limit → 413 before the app parses anything: by `Content-Length` when
      given (the server enforces it), else by reading the streamed chunks up to the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_id("request")
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ] + [(b"x-request-id", raw_id)]
            await send(message)

        limit = get_settings().max_body_bytes
        declared = headers.get(b"content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = True
        if too_large:
            await self._reject(scope, send_with_id)
            return

        app_receive = receive
        if declared is None:
            # A streamed (chunked) body: read it up to the limit before the app sees it.
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._reject(scope, send_with_id)
                    return
                chunks.append(chunk)
                more = bool(message.get("more_body", False))
            app_receive = _replay(b"".join(chunks), receive)

        with logger.append_context_keys(request_id=request_id, path=scope.get("path")):
            try:
                await self.app(scope, app_receive, send_with_id)
            except Exception as exc:
                # Rendered here rather than by Starlette's outermost error middleware so
                # that the 500 carries the request id like every other response.
                if started:
                    raise
                response = await unexpected_error_response(Request(scope), exc)
                await response(scope, _no_body, send_with_id)

    @staticmethod
    async def _reject(scope: Scope, send: Send) -> None:
        response = error_response(Request(scope), PayloadTooLarge())
        await response(scope, _no_body, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields an already-read body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Health(BaseModel):
    status: str
    function: str
    database: str


def create_app(
    name: str,
    *,
    routers: Sequence[APIRouter] = (),
    health_path: str,
    title: str | None = None,
) -> FastAPI:
    """One function's FastAPI app with the error envelope, request ids and a health route."""
    app = FastAPI(
        title=title or f"Igris {name}",
        version="0.1.0",
        openapi_url=f"{health_path.rsplit('/', 1)[0]}/_openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)

    @app.get(
        health_path, response_model=Health, tags=["health"], dependencies=[Depends(public_guard)]
    )
    def health(session: SessionDep) -> dict[str, Any]:
        """Liveness of the function and its database connection."""
        session.execute(text("SELECT 1"))
        return {"status": "ok", "function": name, "database": "ok"}

    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestContextMiddleware)
    return app


def make_handler(app: FastAPI) -> Mangum:
    """The Lambda entry point: Mangum with lifespan off (no startup work per invocation)."""
    return Mangum(app, lifespan="off")
