"""The one error hierarchy and its envelope (API.md §0).

`/api/v1/*` (and every other path) answers `{"error": {code, message, requestId, details?}}`;
`/api/auth/*` answers Better Auth's `{code, message}`. Handlers are installed by
`shared.web.create_app`; nothing else formats an error response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.logs import logger

BETTER_AUTH_PREFIX = "/api/auth/"


class AppError(Exception):
    """An expected failure with a stable snake_case code and an HTTP status."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    default_message: ClassVar[str] = "The request is not valid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Sequence[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.error_code = code or self.code
        self.details = list(details) if details is not None else None
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    default_message = "Missing or invalid credentials."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    default_message = "You are not allowed to do this."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    default_message = "Not found."


class MethodNotAllowed(AppError):
    status_code = 405
    code = "method_not_allowed"
    default_message = "Method not allowed."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    default_message = "The request body is too large."


class Unprocessable(AppError):
    status_code = 422
    code = "validation_error"
    default_message = "The request is not valid."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    default_message = "Too many requests."

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers["Retry-After"] = str(max(1, retry_after))


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    default_message = "The service is temporarily unavailable. Try again shortly."


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    default_message = "The database is unreachable. Try again shortly."


_STATUS_CODES: dict[int, type[AppError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
}


def request_id_of(request: Request) -> str:
    """The request id the middleware assigned (see shared.web)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else ""


def error_response(request: Request, error: AppError) -> JSONResponse:
    """Render `error` in the shape the request's path expects."""
    headers = dict(error.headers)
    if request.url.path.startswith(BETTER_AUTH_PREFIX):
        body: dict[str, Any] = {
            "code": error.error_code.upper(),
            "message": error.message,
        }
        if error.details:
            body["details"] = error.details
    else:
        inner: dict[str, Any] = {
            "code": error.error_code,
            "message": error.message,
            "requestId": request_id_of(request),
        }
        if error.details is not None:
            inner["details"] = error.details
        body = {"error": inner}
    return JSONResponse(body, status_code=error.status_code, headers=headers)


def field_path(location: Sequence[int | str]) -> str:
    """`("body", "rules", 0, "action")` → `rules[0].action`.

    Pydantic reports body locations by alias, so these are the wire (camelCase) names.
    """
    parts = list(location)
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic errors → `[{field, message}]`, dropping the submitted input (no secret echo)."""
    details = []
    for err in errors:
        location = err.get("loc", ()) if isinstance(err, dict) else ()
        message = err.get("msg", "Invalid value.") if isinstance(err, dict) else str(err)
        if isinstance(err, dict) and err.get("type") == "extra_forbidden":
            message = "Unknown field."
        details.append({"field": field_path(location), "message": str(message)})
    return details


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    if any(d["message"].startswith("JSON decode error") for d in details):
        return error_response(
            request, BadRequest("The request body is not valid JSON.", code="invalid_json")
        )
    if request.url.path.startswith(BETTER_AUTH_PREFIX):
        # Better Auth answers 400 VALIDATION_ERROR "[body.email] Invalid email address".
        message = "; ".join(
            f"[{where(err)}] {d['message']}" for err, d in zip(exc.errors(), details, strict=True)
        )
        return error_response(
            request, BadRequest(message, code="validation_error", details=details)
        )
    return error_response(request, Unprocessable(details=details))


def where(error: Any) -> str:
    """`body.email` / `query.id`: Better Auth's location prefix for a validation message."""
    location = [str(part) for part in error.get("loc", ())] if isinstance(error, dict) else []
    return ".".join(location) or "body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_class = _STATUS_CODES.get(exc.status_code, AppError)
    error = error_class(headers=dict(exc.headers or {}))
    if error_class is AppError:
        error.error_code = "http_error"
        error.message = str(exc.detail)
    if exc.status_code in {404, 405} and not isinstance(exc.detail, str | None):
        error.message = str(exc.detail)
    response = error_response(request, error)
    response.status_code = exc.status_code
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable", extra={"error": type(exc).__name__})
    return error_response(request, DatabaseUnavailable())


async def unexpected_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A generic 500 (or 503 for a lost database connection); the traceback goes to the log."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await _database_error(request, exc)
    logger.exception("unhandled error", extra={"path": request.url.path})
    error = AppError("Something went wrong on our side.", code="internal_error")
    response = error_response(request, error)
    response.status_code = 500
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the one envelope."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(Exception, unexpected_error_response)
