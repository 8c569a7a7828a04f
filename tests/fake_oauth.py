"""A small, real OAuth 2.0 provider for tests, served over HTTP on 127.0.0.1.

One server plays both providers Igris signs in with, each under its own path prefix:

- GitHub: `/github/login/oauth/authorize`, `/github/login/oauth/access_token` (a refused code
  is a 200 with an `error` member, as GitHub answers), `/github/api/user` and
  `/github/api/user/emails`.
- Google: `/google/o/oauth2/v2/auth`, `/google/token` (errors are 400/401) and the OpenID
  Connect userinfo endpoint `/google/v1/userinfo`.

`authorize` approves at once as the provider's current `user` and redirects back with a
code and the state (or with `error=access_denied` when `deny` is set); it records the PKCE
challenge. `token` checks the client id and secret, the grant type, that the code exists
and is used once, that `redirect_uri` is the one the code was issued for, and the PKCE
verifier against the recorded S256 challenge. Knobs (`token_status`, `profile_status`,
`delay_seconds`) play a failing or slow provider. Every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

Flavor = Literal["github", "google"]


@dataclass
class FakeUser:
    """Someone signed in at the provider. `account_id` is GitHub's numeric id (as text) or
    Google's `sub`."""

    account_id: str
    email: str | None
    email_verified: bool = True
    name: str | None = "Fake User"
    login: str = "fake-user"


@dataclass
class IssuedCode:
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    user: FakeUser


@dataclass
class FakeProvider:
    """One provider's state: its client, who approves, and everything it was asked."""

    flavor: Flavor
    client_id: str
    client_secret: str
    user: FakeUser | None = None
    deny: bool = False
    token_status: int | None = None
    profile_status: int | None = None
    delay_seconds: float = 0.0
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    tokens: dict[str, FakeUser] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_refusals: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.user = None
        self.deny = False
        self.token_status = self.profile_status = None
        self.delay_seconds = 0.0
        self.codes.clear()
        self.tokens.clear()
        self.authorize_requests.clear()
        self.token_requests.clear()
        self.token_refusals.clear()


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class FakeOAuthServer:
    """`with FakeOAuthServer() as server:` serves both providers on a free loopback port."""

    def __init__(self) -> None:
        self.github = FakeProvider("github", "gh-client-id", "gh-client-secret-" + "s" * 20)
        self.google = FakeProvider("google", "google-client-id", "google-secret-" + "g" * 20)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(
            routes=[
                Route("/github/login/oauth/authorize", self._authorize),
                Route("/github/login/oauth/access_token", self._token, methods=["POST"]),
                Route("/github/api/user", self._github_user),
                Route("/github/api/user/emails", self._github_emails),
                Route("/google/o/oauth2/v2/auth", self._authorize),
                Route("/google/token", self._token, methods=["POST"]),
                Route("/google/v1/userinfo", self._google_userinfo),
            ]
        )

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeOAuthServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OAuth provider did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()

    def reset(self) -> None:
        self.github.reset()
        self.google.reset()

    def env(self) -> dict[str, str]:
        """The Igris settings that point both providers at this server."""
        base = self.base_url
        return {
            "IGRIS_GITHUB_CLIENT_ID": self.github.client_id,
            "IGRIS_GITHUB_CLIENT_SECRET": self.github.client_secret,
            "IGRIS_GITHUB_AUTHORIZE_URL": f"{base}/github/login/oauth/authorize",
            "IGRIS_GITHUB_TOKEN_URL": f"{base}/github/login/oauth/access_token",
            "IGRIS_GITHUB_API_URL": f"{base}/github/api",
            "IGRIS_GOOGLE_CLIENT_ID": self.google.client_id,
            "IGRIS_GOOGLE_CLIENT_SECRET": self.google.client_secret,
            "IGRIS_GOOGLE_AUTHORIZE_URL": f"{base}/google/o/oauth2/v2/auth",
            "IGRIS_GOOGLE_TOKEN_URL": f"{base}/google/token",
            "IGRIS_GOOGLE_USERINFO_URL": f"{base}/google/v1/userinfo",
        }

    # --- endpoints ---------------------------------------------------------------------

    def _provider(self, request: Request) -> FakeProvider:
        return self.github if request.url.path.startswith("/github/") else self.google

    async def _authorize(self, request: Request) -> Response:
        provider = self._provider(request)
        query = dict(request.query_params)
        provider.authorize_requests.append(query)
        redirect_uri, state = query.get("redirect_uri"), query.get("state")
        if query.get("client_id") != provider.client_id:
            return PlainTextResponse("unknown client_id", status_code=400)
        if query.get("response_type") != "code" or not redirect_uri or not state:
            return PlainTextResponse("invalid authorization request", status_code=400)
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method") != "S256":
            return PlainTextResponse("only S256 is supported", status_code=400)
        if provider.deny:
            denied = {
                "error": "access_denied",
                "error_description": "The user denied access",
                "state": state,
            }
            return RedirectResponse(_with_query(redirect_uri, denied), status_code=302)
        if provider.user is None:
            return PlainTextResponse("nobody is signed in at the provider", status_code=400)
        code = secrets.token_urlsafe(24)
        provider.codes[code] = IssuedCode(
            client_id=provider.client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            user=provider.user,
        )
        approved = {"code": code, "state": state}
        return RedirectResponse(_with_query(redirect_uri, approved), status_code=302)

    def _token_error(self, provider: FakeProvider, error: str, status: int = 400) -> Response:
        provider.token_refusals.append(error)
        if provider.flavor == "github":  # GitHub: 200 with an error member
            return JSONResponse({"error": error, "error_description": error})
        return JSONResponse({"error": error}, status_code=status)

    @staticmethod
    def _redeem(
        provider: FakeProvider, form: dict[str, str], authorization: str
    ) -> IssuedCode | tuple[str, int]:
        """The code's grant, or the (error, status) the token endpoint answers."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != provider.client_id or client_secret != provider.client_secret:
            return "invalid_client", 401
        if form.get("grant_type", "authorization_code") != "authorization_code":
            return "unsupported_grant_type", 400
        issued = provider.codes.pop(form.get("code", ""), None)  # a code works once
        if issued is None:
            bad_code = "bad_verification_code" if provider.flavor == "github" else "invalid_grant"
            return bad_code, 400
        if form.get("redirect_uri") != issued.redirect_uri:
            return "redirect_uri_mismatch", 400
        if issued.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or s256(verifier) != issued.code_challenge:
                return "invalid_grant", 400
        return issued

    async def _token(self, request: Request) -> Response:
        provider = self._provider(request)
        if provider.delay_seconds:
            await asyncio.sleep(provider.delay_seconds)
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        provider.token_requests.append(form)
        if provider.token_status is not None:
            return JSONResponse({"error": "server_error"}, status_code=provider.token_status)
        issued = self._redeem(provider, form, request.headers.get("authorization", ""))
        if isinstance(issued, tuple):
            return self._token_error(provider, *issued)
        token = secrets.token_urlsafe(32)
        provider.tokens[token] = issued.user
        if provider.flavor == "github":
            return JSONResponse(
                {"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"}
            )
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3599,
                "refresh_token": "1//refresh-" + secrets.token_urlsafe(16),
                "scope": "openid https://www.googleapis.com/auth/userinfo.email "
                "https://www.googleapis.com/auth/userinfo.profile",
            }
        )

    def _bearer_user(self, request: Request) -> tuple[FakeProvider, FakeUser | None]:
        provider = self._provider(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = provider.tokens.get(token) if scheme.lower() in {"bearer", "token"} else None
        return provider, user

    def _profile_refusal(self, request: Request) -> tuple[FakeUser | None, Response | None]:
        provider, user = self._bearer_user(request)
        if provider.profile_status is not None:
            return None, JSONResponse({"message": "unavailable"}, provider.profile_status)
        if provider.flavor == "github" and not request.headers.get("user-agent"):
            return None, JSONResponse({"message": "User-Agent required"}, status_code=403)
        if user is None:
            return None, JSONResponse({"message": "Bad credentials"}, status_code=401)
        return user, None

    async def _github_user(self, request: Request) -> Response:
        user, refusal = self._profile_refusal(request)
        if refusal is not None or user is None:
            return refusal or Response(status_code=500)
        return JSONResponse(
            {
                "id": int(user.account_id),
                "login": user.login,
                "name": user.name,
                "email": None,  # no public email: the address comes from /user/emails
                "avatar_url": f"https://avatars.example.test/u/{user.account_id}",
            }
        )

    async def _github_emails(self, request: Request) -> Response:
        user, refusal = self._profile_refusal(request)
        if refusal is not None or user is None:
            return refusal or Response(status_code=500)
        emails: list[dict[str, object]] = [
            # A verified secondary address comes first: only the primary one may be used.
            {
                "email": f"{user.account_id}+{user.login}@users.noreply.github.com",
                "primary": False,
                "verified": True,
                "visibility": None,
            }
        ]
        if user.email is not None:
            emails.append(
                {
                    "email": user.email,
                    "primary": True,
                    "verified": user.email_verified,
                    "visibility": "private",
                }
            )
        return JSONResponse(emails)

    async def _google_userinfo(self, request: Request) -> Response:
        user, refusal = self._profile_refusal(request)
        if refusal is not None or user is None:
            return refusal or Response(status_code=500)
        info: dict[str, object] = {"sub": user.account_id, "name": user.name}
        if user.email is not None:
            info |= {"email": user.email, "email_verified": user.email_verified}
        info["picture"] = f"https://lh3.example.test/a/{user.account_id}"
        return JSONResponse(info)
