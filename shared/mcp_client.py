"""A small MCP client (Streamable HTTP transport) for Igris's calls to upstream servers.

Used by `discover` (`list_tools`: the full handshake) and by the proxy (`post_jsonrpc`:
forward any JSON-RPC message or batch, read the reply whether it is JSON or an SSE stream).
It imports httpx and the standard library only: the official `mcp` package costs ~1 s of
cold start, and the proxy needs none of its machinery.

Guarantees, whatever the upstream does:
- The server's credential is injected per `UpstreamAuth` and never appears in an error
  message; the caller's `Authorization`, cookies and hop-by-hop headers are never sent.
- A call is bounded by its `timeout` (a hung upstream → `UpstreamTimeout`) and the reply by
  `max_response_bytes`; everything else that goes wrong (connection refused, 5xx, a redirect,
  a body that is not JSON-RPC) → `UpstreamError`, whose message is safe to log and to show.
- An SSE reply is read only until the responses to the request ids that were sent have
  arrived (notifications and requests the server interleaves before them are kept); the call
  does not wait for the stream to end. A stream that does end right after the response is
  drained for a few milliseconds so that its keep-alive connection can be reused.

The overall deadline of a call is kept by two means: httpx's per-operation timeouts (set to
the whole budget) bound connecting, sending and waiting for the response headers, and once
the headers are in, a single lazily started watchdog thread shuts the socket down when the
deadline passes, so a body that trickles (SSE keep-alive pings, a slow drip) cannot stretch
the call. Nothing runs or connects at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

PROTOCOL_VERSION: Final = "2025-11-25"
"""What Igris offers in `initialize`: the newest revision reachable by the handshake
(`mcp_types.version.LATEST_HANDSHAKE_VERSION` in mcp 2.3.0; a test keeps them in step). The
SDK's `LATEST_PROTOCOL_VERSION` (`2026-07-28`) is a handshake-less, per-request-envelope
revision that an `initialize` cannot negotiate. The server's answer is what later requests
carry in `MCP-Protocol-Version`."""

CLIENT_INFO: Final = {"name": "igris", "version": "0.1.0"}
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
MAX_TOOL_PAGES: Final = 50
SSE_DRAIN_SECONDS: Final = 0.005
"""How long an SSE reply may take to end after its last response before the connection is
dropped instead (the spec asks servers to end it; waiting a little keeps the connection)."""

AuthType = Literal["none", "bearer", "header"]
JsonObject = dict[str, Any]
JsonRpcId = str | int

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_RESERVED_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "keep-alive",
        "mcp-protocol-version",
        "mcp-session-id",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers a caller's `extra_headers` can never set: this module owns them (or, for
`authorization`/`cookie`, they are the agent's own secrets and must not travel upstream)."""

FINGERPRINT_FIELDS: Final = (
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
)
_ALWAYS_FINGERPRINTED: Final = frozenset({"name", "description", "inputSchema"})


class UpstreamError(Exception):
    """The upstream could not be reached or gave no usable answer. The message is safe to log
    and to return to an agent: it never holds the credential or the upstream's body."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the call's timeout."""


@dataclass(frozen=True, slots=True)
class UpstreamAuth:
    """How Igris authenticates to an upstream (API.md §4.1 `authType`)."""

    auth_type: AuthType = "none"
    header_name: str | None = None
    credential: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.auth_type not in ("none", "bearer", "header"):
            raise ValueError(f"unknown auth type {self.auth_type!r}")
        if self.auth_type == "none":
            return
        if not self.credential:
            raise ValueError(f"auth type {self.auth_type!r} needs a credential")
        if _NOT_PRINTABLE_ASCII.search(self.credential):
            raise ValueError("the credential must be printable ASCII (no control characters)")
        if self.auth_type == "header":
            name = self.header_name or ""
            if not _TOKEN.match(name):
                raise ValueError("auth type 'header' needs a valid header name")
            if name.lower() in _RESERVED_HEADERS - {"authorization"}:
                raise ValueError(f"{name!r} cannot carry the credential")

    def headers(self) -> dict[str, str]:
        """The header that carries the credential (empty for `none`)."""
        if self.auth_type == "bearer":
            return {"Authorization": f"Bearer {self.credential}"}
        if self.auth_type == "header":
            assert self.header_name is not None
            assert self.credential is not None
            return {self.header_name: self.credential}
        return {}

    def redact(self, text: str) -> str:
        """`text` with the credential masked (for messages that quote the upstream)."""
        if self.credential:
            return text.replace(self.credential, "***")
        return text


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """What the upstream answered to one POST.

    `messages`: the JSON body as sent (a dict for one message, a list for a batch) for an
    `application/json` reply; every JSON-RPC message in arrival order (a list) for an SSE
    reply; None for 202/204 and other empty replies. On a 4xx it holds the body if that is
    JSON-RPC (e.g. `Session not found` with 404), else None; 5xx raises instead.
    `session_id`: the `Mcp-Session-Id` the upstream returned, else the one that was sent.
    `raw_size`: bytes of body read.
    """

    status_code: int
    messages: list[JsonObject] | JsonObject | None
    session_id: str | None
    content_type: str | None
    raw_size: int

    def message_list(self) -> list[JsonObject]:
        """`messages` as a list (empty when there were none)."""
        if self.messages is None:
            return []
        if isinstance(self.messages, dict):
            return [self.messages]
        return self.messages

    def response_for(self, request_id: JsonRpcId) -> JsonObject | None:
        """The JSON-RPC response (result or error) to `request_id`, if the reply holds one."""
        key = _id_key(request_id)
        for message in self.message_list():
            if _is_response(message) and _id_key(message.get("id")) == key:
                return message
        return None


@dataclass(frozen=True, slots=True)
class UpstreamSession:
    """The outcome of the `initialize` handshake."""

    session_id: str | None
    protocol_version: str
    initialize_result: JsonObject


def new_http_client(
    *, max_connections: int = 20, verify: ssl.SSLContext | bool = True
) -> httpx.Client:
    """An httpx client suited to upstream calls: no redirects (a redirect must not carry the
    credential elsewhere), no environment settings (`trust_env=False`: no `.netrc`
    credentials or proxies picked up by surprise), keep-alive pooling. Create one per process
    and reuse it (creating one costs 30-100 ms here: it loads the CA bundle); per-call timeouts
    are set by each call."""
    return httpx.Client(
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        headers={"User-Agent": "igris-mcp-client"},
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )


def post_jsonrpc(
    client: httpx.Client,
    url: str,
    message: JsonObject | list[JsonObject],
    *,
    auth: UpstreamAuth,
    session_id: str | None = None,
    protocol_version: str | None = None,
    timeout: float,
    extra_headers: Mapping[str, str] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> UpstreamReply:
    """POST one JSON-RPC message (or a batch) to an MCP endpoint and read the reply.

    Raises `UpstreamTimeout` past `timeout` seconds and `UpstreamError` for anything else
    that leaves no usable answer (see the module docstring). A 4xx is returned, not raised:
    the caller decides (404 means the upstream session expired, 401 a bad credential).
    """
    guard = _Deadline(time.monotonic() + timeout, timeout)
    if timeout <= 0:
        raise guard.expired()
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = _request_headers(auth, session_id, protocol_version, extra_headers)
    try:
        try:
            request = client.build_request(
                "POST",
                url,
                content=body,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                extensions={"trace": guard.trace},
            )
            response = client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise guard.expired() from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            guard.release()
            if guard.fired:  # the watchdog cut a connection that was slow to answer
                raise guard.expired() from None
            raise UpstreamError(
                f"the upstream could not be reached ({type(exc).__name__})"
            ) from None
        try:
            guard.watch(response)
            return _read_reply(
                response,
                pending=_request_ids(message),
                sent_session_id=session_id,
                guard=guard,
                max_bytes=max_response_bytes,
            )
        finally:
            guard.release()  # before the connection can go back to the pool
            response.close()
    finally:
        guard.release()


def open_session(
    client: httpx.Client,
    url: str,
    *,
    auth: UpstreamAuth,
    timeout: float,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> UpstreamSession:
    """`initialize` + `notifications/initialized`: the handshake that opens an MCP session."""
    deadline = time.monotonic() + timeout
    request: JsonObject = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        },
    }
    reply = post_jsonrpc(
        client,
        url,
        request,
        auth=auth,
        timeout=_remaining(deadline, timeout),
        max_response_bytes=max_response_bytes,
    )
    result = _result_of(reply, 0, "initialize", auth)
    version = result.get("protocolVersion")
    if not isinstance(version, str) or not version:
        raise UpstreamError("the upstream's initialize result has no protocolVersion")
    session = UpstreamSession(reply.session_id, version, result)
    initialized: JsonObject = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    ack = post_jsonrpc(
        client,
        url,
        initialized,
        auth=auth,
        session_id=session.session_id,
        protocol_version=version,
        timeout=_remaining(deadline, timeout),
        max_response_bytes=max_response_bytes,
    )
    if ack.status_code >= 400:
        raise UpstreamError(
            f"the upstream refused notifications/initialized (HTTP {ack.status_code})",
            status_code=ack.status_code,
        )
    return session


def close_session(
    client: httpx.Client,
    url: str,
    session: UpstreamSession,
    *,
    auth: UpstreamAuth,
    timeout: float,
) -> int | None:
    """DELETE the upstream session, if it has an id. Never raises: returns the HTTP status, or
    None when there was no session or the request failed (a server may answer 405: it does
    not let clients end sessions)."""
    if session.session_id is None or timeout <= 0:
        return None
    headers = _request_headers(auth, session.session_id, session.protocol_version, None)
    try:
        request = client.build_request(
            "DELETE", url, headers=headers, timeout=httpx.Timeout(timeout)
        )
        # Only the status matters: the body is never read (closing drops the connection).
        response = client.send(request, stream=True, follow_redirects=False)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError):
        return None
    response.close()
    return response.status_code


def list_tools(
    url: str,
    *,
    auth: UpstreamAuth,
    timeout: float,
    client: httpx.Client | None = None,
    max_pages: int = MAX_TOOL_PAGES,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> list[JsonObject]:
    """Every tool an upstream offers, through the real protocol: initialize, initialized,
    `tools/list` following `nextCursor` (at most `max_pages` pages), then DELETE the session.

    `timeout` bounds the whole exchange. The tools are returned as the upstream sent them
    (name, description, inputSchema and any other fields). A partial list is never returned:
    too many pages, a repeated cursor, a malformed or duplicated tool → `UpstreamError`.
    Without `client`, one shared by the process is made on first use.
    """
    if client is None:
        client = _default_client()
    deadline = time.monotonic() + timeout
    session = open_session(
        client, url, auth=auth, timeout=timeout, max_response_bytes=max_response_bytes
    )
    try:
        return _list_all_tools(
            client,
            url,
            session,
            auth=auth,
            deadline=deadline,
            timeout=timeout,
            max_pages=max_pages,
            max_response_bytes=max_response_bytes,
        )
    finally:
        close_session(client, url, session, auth=auth, timeout=deadline - time.monotonic())


def tool_fingerprint(tool: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a tool's canonical definition: `name`, `description`, `inputSchema`,
    and `title`, `outputSchema`, `annotations` when present, as JSON with sorted keys and no
    whitespace. Other fields (`_meta`, `icons`, ...) do not count."""
    definition = {
        key: tool.get(key)
        for key in FINGERPRINT_FIELDS
        if key in _ALWAYS_FINGERPRINTED or tool.get(key) is not None
    }
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- the handshake's pieces -------------------------------------------------------------


def _list_all_tools(
    client: httpx.Client,
    url: str,
    session: UpstreamSession,
    *,
    auth: UpstreamAuth,
    deadline: float,
    timeout: float,
    max_pages: int,
    max_response_bytes: int,
) -> list[JsonObject]:
    tools: list[JsonObject] = []
    names: set[str] = set()
    seen_cursors: set[str] = set()
    cursor: str | None = None
    for page in range(1, max_pages + 1):
        request: JsonObject = {"jsonrpc": "2.0", "id": page, "method": "tools/list"}
        if cursor is not None:
            request["params"] = {"cursor": cursor}
        reply = post_jsonrpc(
            client,
            url,
            request,
            auth=auth,
            session_id=session.session_id,
            protocol_version=session.protocol_version,
            timeout=_remaining(deadline, timeout),
            max_response_bytes=max_response_bytes,
        )
        result = _result_of(reply, page, "tools/list", auth)
        page_tools = result.get("tools")
        if not isinstance(page_tools, list):
            raise UpstreamError("the upstream's tools/list result has no tools array")
        for tool in page_tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise UpstreamError("the upstream listed a tool without a name")
            if tool["name"] in names:
                raise UpstreamError("the upstream listed the same tool name twice")
            names.add(tool["name"])
            tools.append(tool)
        next_cursor = result.get("nextCursor")
        if next_cursor is None or next_cursor == "":
            return tools
        if not isinstance(next_cursor, str) or next_cursor in seen_cursors:
            raise UpstreamError("the upstream's tools/list pagination does not progress")
        seen_cursors.add(next_cursor)
        cursor = next_cursor
    raise UpstreamError(f"the upstream's tool list runs past {max_pages} pages")


def _result_of(
    reply: UpstreamReply, request_id: int, method: str, auth: UpstreamAuth
) -> JsonObject:
    if reply.status_code >= 400:
        raise UpstreamError(
            f"the upstream refused {method} (HTTP {reply.status_code})",
            status_code=reply.status_code,
        )
    response = reply.response_for(request_id)
    if response is None:
        raise UpstreamError(f"the upstream sent no response to {method}")
    error = response.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else None
        detail = auth.redact(str(text))[:200] if text is not None else "no message"
        raise UpstreamError(f"the upstream answered {method} with error {code}: {detail}")
    result = response.get("result")
    if not isinstance(result, dict):
        raise UpstreamError(f"the upstream's {method} response has no result object")
    return result


def _remaining(deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise UpstreamTimeout(f"the upstream did not answer within {timeout:g} s")
    return left


# --- one POST ---------------------------------------------------------------------------


def _request_headers(
    auth: UpstreamAuth,
    session_id: str | None,
    protocol_version: str | None,
    extra_headers: Mapping[str, str] | None,
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if extra_headers:
        for name, value in extra_headers.items():
            if name.lower() not in _RESERVED_HEADERS:
                headers[name] = value
    # Compressed bodies could expand past the size cap inside a single read.
    headers["Accept-Encoding"] = "identity"
    headers["Accept"] = "application/json, text/event-stream"
    headers["Content-Type"] = "application/json"
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    if protocol_version is not None:
        headers["MCP-Protocol-Version"] = protocol_version
    for name, value in auth.headers().items():
        for existing in [key for key in headers if key.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return headers


def _request_ids(message: JsonObject | list[JsonObject]) -> set[str]:
    """The ids the upstream owes responses to: those of the requests in the message."""
    items = message if isinstance(message, list) else [message]
    ids: set[str] = set()
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("method"), str):
            key = _id_key(item.get("id"))
            if key is not None:
                ids.add(key)
    return ids


def _id_key(value: object) -> str | None:
    # Lenient on purpose: a server that echoes 1 as "1" still answers request 1.
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _is_response(message: JsonObject) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


def _read_reply(
    response: httpx.Response,
    *,
    pending: set[str],
    sent_session_id: str | None,
    guard: _Deadline,
    max_bytes: int,
) -> UpstreamReply:
    status = response.status_code
    content_type = response.headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    session_id = response.headers.get("mcp-session-id") or sent_session_id
    if 300 <= status < 400:
        raise UpstreamError(
            f"the upstream redirected (HTTP {status}); not followed", status_code=status
        )
    if status >= 500:
        raise UpstreamError(f"the upstream failed (HTTP {status})", status_code=status)
    if status < 200:
        raise UpstreamError(f"the upstream sent an unexpected HTTP {status}", status_code=status)
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UpstreamError(f"the upstream's reply exceeds {max_bytes} bytes")

    if media_type == "text/event-stream" and status < 300:
        if not pending:
            return UpstreamReply(status, None, session_id, content_type, 0)
        messages, size = _read_sse(response, pending, max_bytes, guard)
        return UpstreamReply(status, messages, session_id, content_type, size)
    raw = _read_body(response, max_bytes, guard)

    if status >= 400:
        return UpstreamReply(
            status, _parse_jsonrpc(raw, strict=False), session_id, content_type, len(raw)
        )
    if not raw.strip():
        if pending:
            raise UpstreamError(
                f"the upstream sent an empty reply (HTTP {status})", status_code=status
            )
        return UpstreamReply(status, None, session_id, content_type, len(raw))
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UpstreamError(
            "the upstream's reply is neither JSON nor an event stream", status_code=status
        )
    return UpstreamReply(
        status, _parse_jsonrpc(raw, strict=True), session_id, content_type, len(raw)
    )


def _read_body(response: httpx.Response, max_bytes: int, guard: _Deadline) -> bytes:
    body = bytearray()
    for chunk in guard.chunks(response.iter_bytes()):
        body += chunk
        if len(body) > max_bytes:
            raise UpstreamError(f"the upstream's reply exceeds {max_bytes} bytes")
    return bytes(body)


def _parse_jsonrpc(raw: bytes, *, strict: bool) -> list[JsonObject] | JsonObject | None:
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) or (
        isinstance(parsed, list) and parsed and all(isinstance(item, dict) for item in parsed)
    ):
        return parsed
    if strict:
        raise UpstreamError("the upstream's reply is not JSON-RPC")
    return None


def _read_sse(
    response: httpx.Response, pending: set[str], max_bytes: int, guard: _Deadline
) -> tuple[list[JsonObject], int]:
    parser = _SSEParser()
    messages: list[JsonObject] = []
    waiting = set(pending)
    size = 0
    chunks = guard.chunks(response.iter_bytes())
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamError(f"the upstream's reply exceeds {max_bytes} bytes")
        for data in parser.feed(chunk):
            _collect(data, messages, waiting)
        if not waiting:
            guard.drain(chunks, max_bytes - size)
            return messages, size
    for data in parser.end():
        _collect(data, messages, waiting)
    if waiting:
        raise UpstreamError("the upstream's event stream ended before the response")
    return messages, size


def _collect(data: str, messages: list[JsonObject], waiting: set[str]) -> None:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise UpstreamError(
            "the upstream's event stream carries something other than JSON"
        ) from None
    items = parsed if isinstance(parsed, list) else [parsed]
    for item in items:
        if not isinstance(item, dict):
            raise UpstreamError("the upstream's event stream carries something other than JSON-RPC")
        messages.append(item)
        if _is_response(item):
            key = _id_key(item.get("id"))
            if key is not None:
                waiting.discard(key)
            elif "error" in item:
                # An error the server could not tie to a request (id null) ends the wait.
                waiting.clear()


class _SSEParser:
    """Incremental `text/event-stream` parser: yields the data of each `message` event."""

    __slots__ = ("_buffer", "_data", "_event", "_scan")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scan = 0
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._buffer
        buffer += chunk
        events: list[str] = []
        end_of_buffer = len(buffer)
        start = 0
        scan = self._scan
        while True:
            lf = buffer.find(b"\n", scan)
            cr = buffer.find(b"\r", scan, lf if lf != -1 else end_of_buffer)
            if cr != -1:
                if cr + 1 == end_of_buffer:
                    scan = cr  # a CR that may be the first half of CRLF: wait for more
                    break
                line_end, scan = cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            elif lf != -1:
                line_end, scan = lf, lf + 1
            else:
                scan = end_of_buffer
                break
            self._line(bytes(buffer[start:line_end]), events)
            start = scan
        del buffer[:start]
        self._scan = scan - start
        return events

    def end(self) -> list[str]:
        """At the end of the stream: a last event whose blank line never came still counts."""
        events: list[str] = []
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
            self._scan = 0
        self._line(b"", events)
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        if not raw:
            if self._data and self._event in ("", "message"):
                data = "\n".join(self._data)
                if data:
                    events.append(data)
            self._data = []
            self._event = ""
            return
        if raw[0] == 0x3A:  # ":" starts a comment (keep-alive pings)
            return
        name, separator, value = raw.decode("utf-8", "replace").partition(":")
        if separator and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


# --- the deadline -----------------------------------------------------------------------


class _Deadline:
    """Keeps one call within its deadline (see the module docstring).

    The watchdog is armed on the connection's socket as soon as it is known: right after a
    new connection is made (httpcore's `trace` extension reports it), else once the response
    headers are in (a pooled connection, whose header wait httpx's read timeout bounds). TLS
    replaces the socket object (the plain one is detached), so the alarm follows it.
    """

    __slots__ = ("_alarm", "_deadline", "_socket", "_timeout", "fired")

    def __init__(self, deadline: float, timeout: float) -> None:
        self._deadline = deadline
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._alarm: _Alarm | None = None
        self.fired = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event.endswith(("connect_tcp.complete", "start_tls.complete")):
            self._attach(info.get("return_value"))

    def watch(self, response: httpx.Response) -> None:
        """Arm for reading `response`'s body (on the socket it arrived on); raise if the time
        is already up."""
        self._attach(response.extensions.get("network_stream"))
        if time.monotonic() >= self._deadline:
            raise self.expired()

    def release(self) -> None:
        if self._alarm is not None:
            self.fired = _watchdog().disarm(self._alarm) or self.fired
            self._alarm = None

    def expired(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"the upstream did not answer within {self._timeout:g} s")

    def chunks(self, source: Iterator[bytes]) -> Iterator[bytes]:
        """`source`, with transport failures mapped to `UpstreamError`/`UpstreamTimeout`."""
        while True:
            try:
                chunk = next(source)
            except StopIteration:
                return
            except httpx.TimeoutException:
                raise self.expired() from None
            except httpx.HTTPError as exc:
                if self._has_fired() or time.monotonic() >= self._deadline:
                    raise self.expired() from None
                raise UpstreamError(
                    f"the upstream connection failed mid-reply ({type(exc).__name__})"
                ) from None
            if time.monotonic() >= self._deadline:
                raise self.expired()
            yield chunk

    def drain(self, chunks: Iterator[bytes], budget: int) -> None:
        """Read what is left of a reply whose answer is complete, briefly, so a stream that
        ends now leaves its connection reusable; one that goes on is cut (never raises)."""
        if self._socket is None:
            return
        self.release()
        drain_deadline = min(self._deadline, time.monotonic() + SSE_DRAIN_SECONDS)
        self._alarm = _watchdog().arm(self._socket, drain_deadline)
        try:
            for chunk in chunks:
                budget -= len(chunk)
                if budget < 0:
                    return
        except UpstreamError:
            return

    def _attach(self, stream: object) -> None:
        get_extra_info = getattr(stream, "get_extra_info", None)
        sock = get_extra_info("socket") if get_extra_info is not None else None
        if isinstance(sock, socket.socket) and sock is not self._socket:
            self.release()
            self._socket = sock
            self._alarm = _watchdog().arm(sock, self._deadline)

    def _has_fired(self) -> bool:
        return self.fired or (self._alarm is not None and self._alarm.fired)


class _Alarm:
    __slots__ = ("active", "fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.active = True
        self.fired = False


class _Watchdog:
    """One daemon thread that shuts down the sockets whose deadline has passed.

    Arming is a heap push under a lock; the thread is woken only when a new alarm is due
    before everything already queued, so on a busy instance calls rarely wake it. Disarmed
    alarms are dropped lazily when they reach the top of the heap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, deadline: float) -> _Alarm:
        alarm = _Alarm(sock)
        with self._lock:
            heapq.heappush(self._heap, (deadline, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="igris-upstream-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is alarm:
                self._wake.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> bool:
        """Stop the alarm; True if it had already fired."""
        with self._lock:
            alarm.active = False
            return alarm.fired

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                heap = self._heap
                while heap and (not heap[0][2].active or heap[0][0] <= now):
                    _, _, alarm = heapq.heappop(heap)
                    if alarm.active:
                        alarm.active = False
                        alarm.fired = True
                        with contextlib.suppress(OSError):
                            # The plain socket's method, also for an SSLSocket: its own
                            # shutdown() would reset its SSL object under the reading thread.
                            socket.socket.shutdown(alarm.sock, socket.SHUT_RDWR)
                self._wake.wait(heap[0][0] - now if heap else None)


_watchdog_instance: _Watchdog | None = None
_default_client_instance: httpx.Client | None = None
_lazy_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    global _watchdog_instance  # noqa: PLW0603 - created on first use, not at import
    if _watchdog_instance is None:
        with _lazy_lock:
            if _watchdog_instance is None:
                _watchdog_instance = _Watchdog()
    return _watchdog_instance


def _default_client() -> httpx.Client:
    global _default_client_instance  # noqa: PLW0603 - created on first use, not at import
    if _default_client_instance is None:
        with _lazy_lock:
            if _default_client_instance is None:
                _default_client_instance = new_http_client()
    return _default_client_instance
