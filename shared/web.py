"""The FastAPI app factory and the Mangum handler factory every HTTP function uses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI
from mangum import Mangum
from pydantic import BaseModel
from sqlalchemy import text
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import public_guard
from shared.config import get_settings
from shared.cookies import SESSION_COOKIE
from shared.db import SessionDep
from shared.errors import (
    Forbidden,
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
    - Cookie-authenticated state changes from untrusted origins → 403 (`origin_refusal`).
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

        refusal = origin_refusal(scope, headers)
        if refusal is not None:
            response = error_response(Request(scope), refusal)
            await response(scope, _no_body, send_with_id)
            return

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
            body = await _read_limited(receive, limit)
            if body is None:
                await self._reject(scope, send_with_id)
                return
            app_receive = _replay(body, receive)

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


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def own_origin(scope: Scope, headers: dict[bytes, bytes]) -> str:
    """The origin clients reach this API at (API Gateway sets X-Forwarded-Proto)."""
    scheme = headers.get(b"x-forwarded-proto", b"").decode("latin-1") or scope.get("scheme", "http")
    host = headers.get(b"host", b"").decode("latin-1")
    return f"{scheme}://{host}".lower()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def is_trusted_origin(origin: str, scope: Scope, headers: dict[bytes, bytes]) -> bool:
    return origin == own_origin(scope, headers) or origin in get_settings().trusted_origins


def request_origin(headers: dict[bytes, bytes]) -> str | None:
    """`Origin`, else the origin of `Referer`, else None (a literal "null" counts as none)."""
    origin = headers.get(b"origin", b"").decode("latin-1").strip().rstrip("/").lower()
    if origin and origin != "null":
        return origin
    referer = headers.get(b"referer", b"").decode("latin-1")
    return origin_of(referer) or None


def origin_refusal(scope: Scope, headers: dict[bytes, bytes]) -> Forbidden | None:
    """CSRF defence: a state-changing request authenticated by the session cookie must come
    from a trusted origin (the API's own, or IGRIS_TRUSTED_ORIGINS). Bearer requests carry
    no ambient credential and are not checked."""
    if scope.get("method", "GET") in _SAFE_METHODS:
        return None
    cookies = headers.get(b"cookie", b"").decode("latin-1")
    if SESSION_COOKIE not in cookies:
        return None
    origin = request_origin(headers)
    if origin is None:
        return Forbidden("Missing or null Origin", code="missing_or_null_origin")
    if not is_trusted_origin(origin, scope, headers):
        return Forbidden("Invalid origin", code="invalid_origin")
    return None


async def _read_limited(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` bytes."""
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
            return None
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


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
