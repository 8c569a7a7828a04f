"""The session cookie, signed the way Better Auth signs it, and the bearer plugin's
`set-auth-token` header.

Cookie value: `token.signature` (URL-encoded), signature = base64(HMAC-SHA256(IGRIS_SECRET,
token)). An unsigned or badly signed cookie counts as no session. Responses that set a
session cookie also carry `set-auth-token: token.signature` for bearer clients.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final
from urllib.parse import quote, unquote

from starlette.responses import Response

from shared.config import get_settings
from shared.security import constant_time_equal

SESSION_COOKIE: Final = "igris.session_token"
DONT_REMEMBER_COOKIE: Final = "igris.dont_remember"
SESSION_COOKIE_MAX_AGE: Final = 7 * 24 * 3600
SIGNATURE_LENGTH: Final = 44


def sign(value: str) -> str:
    digest = hmac.new(get_settings().signing_key(), value.encode("utf-8"), hashlib.sha256)
    return f"{value}.{base64.b64encode(digest.digest()).decode()}"


def unsign(signed: str) -> str | None:
    """The value inside `value.signature`, or None when the signature does not verify."""
    value, dot, signature = unquote(signed).rpartition(".")
    if not dot or len(signature) != SIGNATURE_LENGTH or not signature.endswith("="):
        return None
    expected = sign(value).rpartition(".")[2]
    return value if constant_time_equal(expected, signature) else None


def bearer_token(credential: str) -> str | None:
    """A bearer credential is the raw token or its signed form (`token.signature`)."""
    if "." in credential:
        return unsign(credential)
    return credential


def _secure() -> bool:
    return not get_settings().is_local


def set_session_cookie(response: Response, token: str, *, remember: bool = True) -> None:
    """Set the session cookie (and `set-auth-token` for bearer clients)."""
    signed = sign(token)
    response.set_cookie(
        SESSION_COOKIE,
        quote(signed, safe=""),
        max_age=SESSION_COOKIE_MAX_AGE if remember else None,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(),
    )
    if not remember:
        response.set_cookie(
            DONT_REMEMBER_COOKIE,
            quote(sign("true"), safe=""),
            path="/",
            httponly=True,
            samesite="lax",
            secure=_secure(),
        )
    response.headers["set-auth-token"] = signed
    response.headers["access-control-expose-headers"] = "set-auth-token"


def clear_session_cookie(response: Response) -> None:
    for name in (SESSION_COOKIE, DONT_REMEMBER_COOKIE):
        response.set_cookie(
            name, "", max_age=0, path="/", httponly=True, samesite="lax", secure=_secure()
        )
