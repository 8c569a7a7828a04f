"""A real upstream MCP server for tests, built with the official `mcp` SDK (2.x).

Igris sits between agents and MCP servers, so its tests need an MCP server that behaves like
the ones customers register: the SDK's high-level `MCPServer` served over Streamable HTTP by
uvicorn on 127.0.0.1 (a free port, a background thread). Use it as a context manager:

    from tests.mcp_upstream import running_upstream

    def test_discover() -> None:
        with running_upstream(required_header=("authorization", "Bearer s3cret")) as upstream:
            ...  # point the code under test at upstream.url (http://127.0.0.1:<port>/mcp)
            assert all(r.headers["authorization"] == "Bearer s3cret" for r in upstream.requests)
            assert upstream.tool_calls() == [("read_data", {"key": "a"})]

or wrap it in a fixture of your own (`with running_upstream(...) as u: yield u`). Starting one
takes ~50 ms; each `running_upstream` gets a fresh server, so tests never share state.

Knobs:
- `json_response=True` answers every POST with `application/json`; `False` answers with an SSE
  stream (`text/event-stream`, one `message` event per JSON-RPC message), the SDK's default and
  what most real servers do.
- `stateless=True` issues no `Mcp-Session-Id`; `False` issues one on `initialize` and then
  requires it (unknown or deleted session → 404).
- `required_header=(name, value)`: a request without exactly that header is refused with 401
  before it reaches the SDK (a stand-in for an upstream that wants its API key).
- `upstream.force_status = 503` makes every request fail with that status until reset to None.
- `upstream.set_description(tool, text)`, `add_tool(...)`, `remove_tool(name)` change what
  `tools/list` returns from the next request on (for `tool_definition_changed`).
- `server=`: serve an `MCPServer` of your own instead (e.g. from `build_server()` plus tools).
- `ssl_certfile=`/`ssl_keyfile=`: serve HTTPS (production upstreams are HTTPS).

Every HTTP request is recorded in `upstream.requests` (method, path, lower-cased headers, the
parsed JSON body, the status answered, the caller's port) by a small ASGI middleware around
the SDK's app, so a test can assert that the injected credential arrived and the caller's key
never did.

Tools: `read_data(key)`, `write_record(table, value)`, `delete_users(ids)`, `drop_table(name)`,
`get_patient(patient_id)` (its text holds the SSN-like `123-45-6789`, for redaction tests),
`echo(text)`, `slow(seconds)` (sleeps, for timeouts) and `fail()` (raises: an `isError` result).
Keep `slow` short (≤ 1 s): uvicorn's shutdown waits up to 1 s for a call still sleeping.

Notes on mcp 2.3.0: a request whose `MCP-Protocol-Version` header is not a handshake-era
version (e.g. `2026-07-28`, the SDK's `LATEST_PROTOCOL_VERSION`, or any unknown value) is routed
to the stateless "modern" handler and refused with 400 unless it carries the per-request
`params._meta` envelope; clients must send the version that `initialize` negotiated.
DNS-rebinding protection is switched off here because proxied requests may carry another Host
header than 127.0.0.1. The SDK accepts no JSON-RPC batches (a JSON array → 400), and its
`tools/list` does not paginate. A stateless server answers `tools/list` without `initialize`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATIENT_SSN = "123-45-6789"

TOOL_NAMES = (
    "read_data",
    "write_record",
    "delete_users",
    "drop_table",
    "get_patient",
    "echo",
    "slow",
    "fail",
)


def read_data(key: str) -> str:
    """Read the value stored under a key."""
    return f"value of {key}"


def write_record(table: str, value: str) -> str:
    """Write a record into a table."""
    return f"wrote {value!r} to {table}"


def delete_users(ids: list[int]) -> str:
    """Delete users by id."""
    return f"deleted {len(ids)} users"


def drop_table(name: str) -> str:
    """Drop a table."""
    return f"dropped {name}"


def get_patient(patient_id: str) -> str:
    """Fetch a patient's record (contains PHI)."""
    return f"Patient {patient_id}: Jane Roe, SSN {PATIENT_SSN}, born 1980-01-01"


def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


async def slow(seconds: float) -> str:
    """Sleep for a number of seconds, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}s"


def fail() -> str:
    """Always fail."""
    raise ToolError("the upstream tool failed")


TOOLS: dict[str, Callable[..., Any]] = {
    "read_data": read_data,
    "write_record": write_record,
    "delete_users": delete_users,
    "drop_table": drop_table,
    "get_patient": get_patient,
    "echo": echo,
    "slow": slow,
    "fail": fail,
}


@dataclass
class RecordedRequest:
    """One HTTP request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ", "."""
    body: Any
    """The parsed JSON body; None when empty, the raw text when it is not JSON."""
    status: int | None = None
    """The status the upstream answered (None while the response has not started)."""
    client_port: int | None = None
    """The caller's TCP port: equal ports on consecutive requests mean a reused connection."""
    reached_server: bool = False
    """Whether it got past the knobs (`force_status`, `required_header`) to the SDK."""

    @property
    def rpc_method(self) -> str | None:
        """The JSON-RPC method of a single-message body, if any."""
        if isinstance(self.body, dict):
            method = self.body.get("method")
            return method if isinstance(method, str) else None
        return None


@dataclass
class Upstream:
    """A running upstream: where it listens, what it received, and its knobs."""

    url: str
    server: MCPServer[Any]
    required_header: tuple[str, str] | None = None
    force_status: int | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    """The function behind each tool, for `set_description`."""

    def rpc_methods(self) -> list[str | None]:
        """The JSON-RPC method of each recorded POST, in order."""
        return [r.rpc_method for r in self.requests if r.method == "POST"]

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """(tool name, arguments) of each `tools/call` that reached the upstream."""
        calls: list[tuple[str, dict[str, Any]]] = []
        for request in self.requests:
            if request.rpc_method == "tools/call" and request.reached_server:
                params = request.body.get("params") or {}
                calls.append((str(params.get("name")), dict(params.get("arguments") or {})))
        return calls

    def set_description(self, tool: str, description: str) -> None:
        """Change a tool's description (so its definition, and fingerprint, change)."""
        self.server.remove_tool(tool)
        self.server.add_tool(self.functions[tool], name=tool, description=description)

    def add_tool(
        self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> None:
        """Expose another tool from the next request on."""
        self.server.add_tool(fn, name=name, description=description)
        self.functions[name or fn.__name__] = fn

    def remove_tool(self, name: str) -> None:
        """Stop exposing a tool from the next request on."""
        self.server.remove_tool(name)
        self.functions.pop(name, None)


def build_server(name: str = "igris-test-upstream") -> MCPServer[Any]:
    """An `MCPServer` exposing the test tools."""
    server: MCPServer[Any] = MCPServer(name, log_level="WARNING")
    for tool_name, fn in TOOLS.items():
        server.add_tool(fn, name=tool_name)
    return server


class _Recorder:
    """ASGI middleware: records each HTTP request, enforces the knobs, then calls the SDK."""

    def __init__(self, app: ASGIApp, upstream: Upstream) -> None:
        self.app = app
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        peer = scope.get("client")
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            body=_parse(raw),
            client_port=peer[1] if peer else None,
        )
        self.upstream.requests.append(record)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        if self.upstream.force_status is not None:
            await _plain(recording_send, self.upstream.force_status, b"forced failure")
            return
        required = self.upstream.required_header
        if required is not None and headers.get(required[0].lower()) != required[1]:
            await _plain(recording_send, 401, b'{"error":"unauthorized"}', "application/json")
            return
        record.reached_server = True

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, recording_send)


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


async def _plain(send: Send, status: int, body: bytes, content_type: str = "text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve_asgi(
    app: ASGIApp,
    *,
    lifespan: bool = True,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread; yields the base
    URL (`http://127.0.0.1:<port>`, or `https://` with a certificate and key). Also useful
    for small fake servers of a test's own."""
    # proto must be IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections
    # only when the listening socket's proto says TCP, and with 0 (the default) every
    # keep-alive request waits ~40 ms (Nagle against the client's delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on" if lifespan else "off",
        timeout_graceful_shutdown=1,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test ASGI server did not start")
            time.sleep(0.005)
        yield f"{'https' if ssl_certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


@contextlib.contextmanager
def running_upstream(
    *,
    json_response: bool = True,
    stateless: bool = False,
    required_header: tuple[str, str] | None = None,
    server: MCPServer[Any] | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> Iterator[Upstream]:
    """Run a fresh upstream MCP server (see the module docstring) for the `with` block; over
    HTTPS when given a certificate and its key."""
    mcp_server = server if server is not None else build_server()
    app = mcp_server.streamable_http_app(
        json_response=json_response,
        stateless_http=stateless,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    upstream = Upstream(
        url="",
        server=mcp_server,
        required_header=required_header,
        functions=dict(TOOLS) if server is None else {},
    )
    recorder = _Recorder(app, upstream)
    with serve_asgi(recorder, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile) as base_url:
        upstream.url = f"{base_url}/mcp"
        yield upstream
