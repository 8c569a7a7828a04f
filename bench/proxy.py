"""The MCP governance proxy, measured end to end (issue 5, "Measure and report").

Runs against the database in DATABASE_URL (scripts/bench starts a throwaway PostgreSQL 17
behind a real PgBouncer in transaction mode). Every process involved is a real one:

- the upstream: the official `mcp` SDK's `MCPServer` with the test tools
  (tests/mcp_upstream.py), streamable HTTP in stateless JSON-response mode, served by uvicorn
  in a process of its own (no GIL shared with the client or the proxy);
- the proxy: `python -m igris.cli serve --port P` (one uvicorn process, every function), with
  DATABASE_URL pointing at PgBouncer;
- a tenant committed through `tests.functions.proxy.support.make_tenant` whose policy allows
  every tool, and its API key.

Four figures, each with the target the issue sets:

1. Added latency: the same `tools/call echo` (identical bytes, keep-alive `httpx.Client`s)
   sent straight to the upstream and through `/proxy/<slug>`, interleaved (the order within
   each pair alternates), after a warm-up; median, p95, p99 of both and the differences.
2. PostgreSQL round trips per warm `tools/call`: a second `igris serve` talks to PgBouncer
   through a counting TCP relay; a round trip is a burst of bytes the application sends
   after PgBouncer last answered (pipelined statements are one round trip). The relay also
   parses the client side of the wire protocol to name the statements (Parse / Query
   messages), so the report shows what each round trip was, and the time spent waiting for
   PgBouncer.
3. Throughput: 50 concurrent clients (asyncio, each its own keep-alive connection, a
   minimal HTTP/1.1 client so that the load generator costs little of the CPUs it shares
   with the proxy) for 60 s through `igris serve`; calls per second, latency under load,
   errors (a non-200, a JSON-RPC error, an `isError` result or a transport failure), the
   first few printed; the proxy's CPU use and PgBouncer's pool queue (SHOW POOLS) beside.
4. Cold start of the Lambda handler: fresh `python` processes that import
   `functions.proxy.main` and call `handler` once with an API Gateway HTTP API v2 event for
   `POST /proxy/<slug>` (import + first call timed inside the process, and the whole
   process's wall time from outside), median of N after one warm-up of the .pyc cache.

Knobs (environment): IGRIS_BENCH_PROXY_CALLS (latency pairs, default 1000),
IGRIS_BENCH_PROXY_SECONDS (throughput duration, default 60), IGRIS_BENCH_PROXY_CLIENTS
(default 50), IGRIS_BENCH_PROXY_COLD_RUNS (default 11). Re-runnable: each run makes its own
tenant and starts its own processes, and stops them all on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
CALLS = int(os.environ.get("IGRIS_BENCH_PROXY_CALLS", "1000"))
WARMUP = 100
ROUND_TRIP_CALLS = 200
THROUGHPUT_SECONDS = float(os.environ.get("IGRIS_BENCH_PROXY_SECONDS", "60"))
CLIENTS = int(os.environ.get("IGRIS_BENCH_PROXY_CLIENTS", "50"))
COLD_RUNS = int(os.environ.get("IGRIS_BENCH_PROXY_COLD_RUNS", "11"))
SHOWN_ERRORS = 5
ALLOW_ALL = [{"tool": "*", "action": "allow"}]
ECHO_TEXT = "hello from the bench"
TARGET_ADDED_MS = 3.0
TARGET_ROUND_TRIPS = 2
START_TIMEOUT = 60.0

UPSTREAM_PROBE = """
from bench.proxy import serve_upstream
serve_upstream()
"""

COLD_PROBE = """
import json, sys, time
from igris.lambda_context import LocalLambdaContext
event = json.loads(sys.stdin.read())
started = time.perf_counter()
from functions.proxy.main import handler
imported = time.perf_counter()
result = handler(event, LocalLambdaContext(function_name="igris-proxy"))
called = time.perf_counter()
print("BENCH " + json.dumps({
    "import": imported - started,
    "call": called - imported,
    "status": result.get("statusCode"),
    "body": str(result.get("body", ""))[:400],
}), flush=True)
"""


# --------------------------------------------------------------------- statistics


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, p95, p99)."""
    return statistics.median(values), percentile(values, 0.95), percentile(values, 0.99)


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# --------------------------------------------------------------------- processes


def serve_upstream() -> None:
    """In a child process: the SDK's MCP server (stateless, JSON replies) on a free port;
    prints its URL, then serves until standard input is closed."""
    from mcp.server.transport_security import TransportSecuritySettings

    from tests.mcp_upstream import build_server, serve_asgi

    app = build_server("igris-bench-upstream").streamable_http_app(
        json_response=True,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    with serve_asgi(app) as base_url:
        print(f"{base_url}/mcp", flush=True)
        sys.stdin.read()


@dataclass(frozen=True)
class Child:
    """A process this bench started: where it listens, and its pid."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def upstream_process(env: dict[str, str]) -> Iterator[Child]:
    """The upstream MCP server in a process of its own."""
    process = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM_PROBE],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the upstream did not start (exit code {process.poll()})")
        yield Child(url, process.pid)
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop(process)


@contextlib.contextmanager
def igris_serve(env: dict[str, str], log_dir: Path, name: str) -> Iterator[Child]:
    """`igris serve` on a free port, its output in a log file; yields it (its base URL)
    once `/proxy/_health` answers 200."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "igris.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"igris serve ({name}) exited:\n{tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{base_url}/proxy/_health", timeout=5, trust_env=False).status_code
                    == 200
                ):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"igris serve ({name}) did not get healthy:\n{tail(log_path)}")
            time.sleep(0.1)
        yield Child(base_url, process.pid)
    finally:
        stop(process)


# --------------------------------------------------------------------- the calls


def call_body(request_id: int = 1) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": ECHO_TEXT}},
    }
    return json.dumps(message, separators=(",", ":")).encode()


def mcp_headers(authorization: str) -> dict[str, str]:
    from shared.mcp_client import PROTOCOL_VERSION

    return {
        "Authorization": authorization,
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL_VERSION,
    }


def keep_alive_client(authorization: str) -> httpx.Client:
    """A keep-alive client sending the MCP headers (no proxies from the environment)."""
    return httpx.Client(headers=mcp_headers(authorization), timeout=30, trust_env=False)


def problem(status: int, text: str) -> str | None:
    """Why a reply is not a successful echo (None when it is)."""
    if status != 200:
        return f"HTTP {status}: {text[:200]}"
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return f"not a JSON-RPC response: {text[:200]}"
    if "error" in answer:
        return f"JSON-RPC error: {json.dumps(answer['error'])[:200]}"
    result = answer.get("result") or {}
    if result.get("isError"):
        return f"isError result: {json.dumps(result)[:200]}"
    if ECHO_TEXT not in json.dumps(result):
        return f"unexpected result: {json.dumps(result)[:200]}"
    return None


def timed_call(client: httpx.Client, url: str, body: bytes) -> float:
    """One call; milliseconds. Raises on anything but a successful echo."""
    started = time.perf_counter()
    response = client.post(url, content=body)
    elapsed = (time.perf_counter() - started) * 1000
    failure = problem(response.status_code, response.text)
    if failure is not None:
        raise RuntimeError(f"{url}: {failure}")
    return elapsed


@dataclass
class Setup:
    upstream_url: str
    proxy_url: str
    upstream_pid: int
    proxy_pid: int
    upstream_auth: str
    proxy_auth: str
    slug: str


# --------------------------------------------------------------------- 1. latency


def measure_latency(setup: Setup) -> float:
    body = call_body()
    with (
        keep_alive_client(setup.upstream_auth) as direct,
        keep_alive_client(setup.proxy_auth) as proxied,
    ):
        for _ in range(WARMUP):
            timed_call(direct, setup.upstream_url, body)
            timed_call(proxied, setup.proxy_url, body)
        direct_ms: list[float] = []
        proxied_ms: list[float] = []
        cpu_before = cpu_seconds(setup.proxy_pid), cpu_seconds(setup.upstream_pid)
        for i in range(CALLS):
            if i % 2 == 0:
                direct_ms.append(timed_call(direct, setup.upstream_url, body))
                proxied_ms.append(timed_call(proxied, setup.proxy_url, body))
            else:
                proxied_ms.append(timed_call(proxied, setup.proxy_url, body))
                direct_ms.append(timed_call(direct, setup.upstream_url, body))
        cpu_after = cpu_seconds(setup.proxy_pid), cpu_seconds(setup.upstream_pid)
    d = summary(direct_ms)
    p = summary(proxied_ms)
    paired = statistics.median(b - a for a, b in zip(direct_ms, proxied_ms, strict=True))
    print(
        f"1. added latency: tools/call echo, {CALLS} calls each way, interleaved "
        f"(after {WARMUP} warm-up pairs), keep-alive clients"
    )
    print(f"   {'':22} {'median':>9} {'p95':>9} {'p99':>9}")
    print(f"   {'direct to upstream':22} {d[0]:7.2f}ms {d[1]:7.2f}ms {d[2]:7.2f}ms")
    print(f"   {'through igris serve':22} {p[0]:7.2f}ms {p[1]:7.2f}ms {p[2]:7.2f}ms")
    added = p[0] - d[0]
    print(
        f"   {'added':22} {added:7.2f}ms {p[1] - d[1]:7.2f}ms {p[2] - d[2]:7.2f}ms"
        f"   (median of paired differences {paired:.2f} ms)"
    )
    proxy_cpu, upstream_cpu = (
        (after - before) * 1000 / calls if after is not None and before is not None else None
        for before, after, calls in zip(cpu_before, cpu_after, (CALLS, 2 * CALLS), strict=True)
    )
    if proxy_cpu is not None and upstream_cpu is not None:
        print(
            f"   CPU (user+sys) per call: igris serve {proxy_cpu:.2f} ms per proxied call; "
            f"upstream {upstream_cpu:.2f} ms per call it answers"
        )
    met = verdict(added <= TARGET_ADDED_MS)
    print(f"   target: <= {TARGET_ADDED_MS:g} ms added at the median -> {met}")
    return added


# --------------------------------------------------------------------- 2. round trips


@dataclass
class Trip:
    """One round trip: what the application sent before PgBouncer answered."""

    statements: list[str] = field(default_factory=list)
    wait_ns: int = 0
    transactions: int = 0
    """Transactions that ended in it: a COMMIT/ROLLBACK, or a statement run outside an
    explicit BEGIN (autocommit; a pre-ping excluded)."""


class _WireParser:
    """Frames the client side of the PostgreSQL protocol; yields the SQL of Parse and
    Query messages. Gives up quietly on anything it cannot frame (e.g. TLS)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.startup = True
        self.broken = False

    def feed(self, data: bytes) -> list[str]:
        if self.broken:
            return []
        self.buffer += data
        found: list[str] = []
        while not self.broken and (self._startup() if self.startup else self._typed(found)):
            pass
        return found

    def _startup(self) -> bool:
        """One untyped message (SSLRequest, GSSENCRequest, StartupMessage), if complete."""
        buf = self.buffer
        if len(buf) < 8:
            return False
        length = int.from_bytes(buf[:4], "big")
        if length < 8 or length > 1 << 20:
            self.broken = True
            return False
        if len(buf) < length:
            return False
        if int.from_bytes(buf[4:8], "big") >> 16 == 3:  # protocol 3.x: typed from now on
            self.startup = False
        del buf[:length]
        return True

    def _typed(self, found: list[str]) -> bool:
        """One typed message, if complete; the SQL of a Query or a Parse goes to `found`."""
        buf = self.buffer
        if len(buf) < 5:
            return False
        kind = buf[0]
        length = int.from_bytes(buf[1:5], "big")
        if length < 4 or length > 1 << 30:
            self.broken = True
            return False
        if len(buf) < 1 + length:
            return False
        payload = bytes(buf[5 : 1 + length])
        del buf[: 1 + length]
        if kind == ord("Q"):
            found.append(payload.split(b"\0", 1)[0].decode("utf-8", "replace"))
        elif kind == ord("P"):
            parts = payload.split(b"\0", 2)
            if len(parts) >= 2:
                found.append(parts[1].decode("utf-8", "replace"))
        return True


class CountingRelay:
    """A TCP relay in front of PgBouncer that counts the application's round trips."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.trips: list[Trip] = []
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
            link = _Link(self, client, server)
            threading.Thread(target=link.client_to_server, daemon=True).start()
            threading.Thread(target=link.server_to_client, daemon=True).start()


class _Link:
    """One relayed connection: the application's side and PgBouncer's."""

    def __init__(self, relay: CountingRelay, client: socket.socket, server: socket.socket):
        self.relay = relay
        self.client = client
        self.server = server
        self.parser = _WireParser()
        self.current: Trip | None = None  # the round trip awaiting PgBouncer's answer
        self.sent_at = 0
        self.in_transaction = False

    def note(self, trip: Trip, statements: list[str]) -> None:
        for sql in statements:
            trip.statements.append(sql)
            kind = statement_kind(sql)
            if kind == "BEGIN":
                self.in_transaction = True
            elif kind in ("COMMIT", "ROLLBACK"):
                self.in_transaction = False
                trip.transactions += 1
            elif kind == "query" and not self.in_transaction:
                trip.transactions += 1

    def client_to_server(self) -> None:
        self._pump(self.client, self.server, from_client=True)

    def server_to_client(self) -> None:
        self._pump(self.server, self.client, from_client=False)

    def _pump(self, source: socket.socket, sink: socket.socket, *, from_client: bool) -> None:
        relay = self.relay
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                now = time.perf_counter_ns()
                with relay.lock:
                    if from_client:
                        if self.current is None:
                            self.current = Trip()
                            self.sent_at = now
                            relay.trips.append(self.current)
                        self.note(self.current, self.parser.feed(data))
                    elif self.current is not None:
                        self.current.wait_ns = now - self.sent_at
                        self.current = None
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            if not from_client:
                for sock in (self.client, self.server):
                    with contextlib.suppress(OSError):
                        sock.close()


def statement_kind(sql: str) -> str:
    words = sql.strip().rstrip(";").split()
    head = words[0].upper() if words else ""
    if head in ("BEGIN", "START"):
        return "BEGIN"
    if head in ("COMMIT", "END"):
        return "COMMIT"
    if head == "ROLLBACK":
        return "SAVEPOINT" if "SAVEPOINT" in sql.upper() else "ROLLBACK"
    if head in ("SAVEPOINT", "RELEASE"):
        return "SAVEPOINT"
    if not words or [w.upper() for w in words] == ["SELECT", "1"]:
        return "ping"
    return "query"


def short(sql: str, width: int = 96) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def measure_round_trips(env: dict[str, str], log_dir: Path, setup: Setup) -> float:
    pooled = urlsplit(env["DATABASE_URL"])
    assert pooled.hostname is not None
    assert pooled.port is not None
    relay = CountingRelay((pooled.hostname, pooled.port))
    netloc = pooled.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{relay.port}"
    relayed_url = urlunsplit(
        pooled._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
    )
    try:
        with (
            igris_serve({**env, "DATABASE_URL": relayed_url}, log_dir, "serve-relayed") as served,
            keep_alive_client(setup.proxy_auth) as client,
        ):
            url = f"{served.url}/proxy/{setup.slug}"
            body = call_body()
            for _ in range(WARMUP):
                timed_call(client, url, body)
            per_call: list[list[Trip]] = []
            connections_before = relay.connections
            for _ in range(ROUND_TRIP_CALLS):
                with relay.lock:
                    before = len(relay.trips)
                timed_call(client, url, body)
                with relay.lock:
                    per_call.append(list(relay.trips[before:]))
            new_connections = relay.connections - connections_before
    finally:
        relay.close()

    trips = [len(call) for call in per_call]
    kinds: dict[str, list[int]] = {}
    for call in per_call:
        counts: dict[str, int] = {}
        for trip in call:
            for sql in trip.statements:
                kind = statement_kind(sql)
                counts[kind] = counts.get(kind, 0) + 1
        for kind, count in counts.items():
            kinds.setdefault(kind, []).append(count)
    statements = [sum(len(t.statements) for t in call) for call in per_call]
    transactions = [sum(t.transactions for t in call) for call in per_call]
    waits = [sum(t.wait_ns for t in call) / 1e6 for call in per_call]
    median_trips = statistics.median(trips)
    print(
        f"2. PostgreSQL round trips per warm tools/call ({ROUND_TRIP_CALLS} sequential calls "
        f"after {WARMUP} warm-up, counted by a TCP relay between igris serve and PgBouncer)"
    )
    print(
        f"   round trips per call: median {median_trips:g}, mean {statistics.mean(trips):.2f}, "
        f"min {min(trips)}, max {max(trips)}   (new DB connections meanwhile: {new_connections})"
    )
    print(
        f"   statements per call: median {statistics.median(statements):g};  "
        f"transactions per call: median {statistics.median(transactions):g}"
    )
    breakdown = ", ".join(
        f"{kind} {sum(values) / ROUND_TRIP_CALLS:.2f}" for kind, values in sorted(kinds.items())
    )
    print(f"   mean statements per call by kind: {breakdown}")
    print(
        "   time waiting for PgBouncer per call (at the relay): "
        f"median {statistics.median(waits):.2f} ms, p95 {percentile(waits, 0.95):.2f} ms"
    )
    typical = next((c for c in per_call if len(c) == round(median_trips)), per_call[0])
    print("   a typical call, round trip by round trip (wait at the relay, statements sent):")
    for index, trip in enumerate(typical, 1):
        sent = " | ".join(
            short(sql, 80) if statement_kind(sql) != "ping" else f"{sql.strip()!r} (pre-ping)"
            for sql in trip.statements
        )
        print(f"   {index:3}. {trip.wait_ns / 1e6:6.3f} ms  {short(sent, 110) or '(none parsed)'}")
    print(
        f"   target: <= {TARGET_ROUND_TRIPS} round trips (the floor is 1) -> "
        f"{verdict(median_trips <= TARGET_ROUND_TRIPS)}"
    )
    return median_trips


# --------------------------------------------------------------------- 3. throughput


@dataclass
class Load:
    calls: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.first_errors) < SHOWN_ERRORS:
            self.first_errors.append(message)


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load: the request's
    bytes are built once, a reply is read by Content-Length (or chunks). httpx's AsyncClient
    spent more CPU per call than the proxy itself on this machine, and the load generator
    shares the machine's CPUs with what it measures."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        self.request = "\r\n".join(lines).encode("latin-1") + body
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self) -> tuple[int, str]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        try:
            writer.write(self.request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            fields = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head[1:] if line)
            }
            if fields.get("transfer-encoding", "").lower() == "chunked":
                body = await self._chunks(reader)
            else:
                body = await reader.readexactly(int(fields.get("content-length", "0")))
            if fields.get("connection", "").lower() == "close":
                self.close()
            return status, body.decode("utf-8", "replace")
        except BaseException:
            self.close()
            raise

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _load(setup: Setup, seconds: float, clients: int) -> tuple[Load, float]:
    load = Load()
    body = call_body()
    headers = {**mcp_headers(setup.proxy_auth), "User-Agent": "igris-bench"}

    async def worker(deadline: float) -> None:
        connection = RawConnection(setup.proxy_url, headers, body)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status, text = await asyncio.wait_for(connection.call(), timeout=30)
                except (
                    OSError,
                    ValueError,
                    IndexError,
                    TimeoutError,
                    asyncio.IncompleteReadError,
                ) as exc:
                    load.calls += 1
                    load.fail(f"{type(exc).__name__}: {exc}")
                    continue
                load.calls += 1
                load.latencies.append((time.perf_counter() - started) * 1000)
                failure = problem(status, text)
                if failure is not None:
                    load.fail(failure)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(started + seconds) for _ in range(clients)))
    return load, time.perf_counter() - started


class PoolWatch:
    """Samples PgBouncer's `SHOW POOLS` for the application's pool while a load runs
    (best effort: the admin console as user postgres, as igris.pgbouncer sets it up)."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.database = parts.path.lstrip("/")
        self.user = parts.username or ""
        self.samples: list[dict[str, int]] = []
        self.failure: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PoolWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(
                host=self.address[0],
                port=self.address[1],
                user="postgres",
                dbname="pgbouncer",
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=5,
                cursor_factory=psycopg.ClientCursor,
            ) as conn:
                while not self.done.wait(0.25):
                    cursor = conn.execute("SHOW POOLS")
                    names = [column.name for column in cursor.description or ()]
                    for row in cursor.fetchall():
                        pool = dict(zip(names, row, strict=True))
                        if pool.get("database") == self.database and pool.get("user") == self.user:
                            self.samples.append(
                                {k: int(v) for k, v in pool.items() if isinstance(v, int)}
                            )
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"

    def report(self) -> str:
        if not self.samples:
            return f"PgBouncer pool: not sampled ({self.failure or 'no sample'})"
        waiting = [s.get("cl_waiting", 0) for s in self.samples]
        servers = [
            s.get("sv_active", 0) + s.get("sv_used", 0) + s.get("sv_idle", 0) for s in self.samples
        ]
        longest = max(s.get("maxwait", 0) + s.get("maxwait_us", 0) / 1e6 for s in self.samples)
        return (
            f"PgBouncer pool ({len(self.samples)} samples of SHOW POOLS): clients waiting for a "
            f"server connection median {statistics.median(waiting):g}, max {max(waiting)}; "
            f"longest wait {longest * 1000:.0f} ms; server connections max {max(servers)}"
        )


def measure_throughput(setup: Setup, database_url: str) -> tuple[float, int]:
    cpu_before = cpu_seconds(setup.proxy_pid)
    client_before = time.process_time()
    with PoolWatch(database_url) as watch:
        load, elapsed = asyncio.run(_load(setup, THROUGHPUT_SECONDS, CLIENTS))
    client_cpu = time.process_time() - client_before
    cpu_after = cpu_seconds(setup.proxy_pid)
    rate = load.calls / elapsed
    median, p95, p99 = summary(load.latencies) if load.latencies else (0.0, 0.0, 0.0)
    print(
        f"3. throughput: {CLIENTS} concurrent clients for {THROUGHPUT_SECONDS:g} s through "
        "igris serve (1 process) -> PgBouncer (transaction mode)"
    )
    print(
        f"   {load.calls} calls in {elapsed:.1f} s = {rate:.1f} calls/s; errors: {load.errors}"
        f";  latency under load: median {median:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms"
    )
    if cpu_before is not None and cpu_after is not None:
        print(
            f"   igris serve used {(cpu_after - cpu_before) / elapsed * 100:.0f}% of one CPU "
            f"({(cpu_after - cpu_before) * 1000 / max(load.calls, 1):.2f} ms CPU per call); "
            f"the load generator {client_cpu / elapsed * 100:.0f}%"
        )
    print(f"   {watch.report()}")
    for message in load.first_errors:
        print(f"   error: {message}")
    print(f"   target: zero errors -> {verdict(load.errors == 0)}")
    return rate, load.errors


# --------------------------------------------------------------------- 4. cold start


def lambda_event(setup: Setup) -> dict[str, Any]:
    """An API Gateway HTTP API v2 event for `POST /proxy/<slug>` with a tools/call."""
    event: dict[str, Any] = json.loads((ROOT / "events" / "proxy-health.json").read_text())
    body = call_body().decode()
    path = f"/proxy/{setup.slug}"
    headers = {k: v for k, v in mcp_headers(setup.proxy_auth).items()}
    event["rawPath"] = path
    event["headers"] = {
        **event["headers"],
        **{k.lower(): v for k, v in headers.items()},
        "content-length": str(len(body)),
    }
    event["requestContext"]["http"].update(method="POST", path=path)
    event["requestContext"]["timeEpoch"] = int(time.time() * 1000)
    event["pathParameters"] = {"proxy": setup.slug}
    event["body"] = body
    event["isBase64Encoded"] = False
    return event


def cold_sample(env: dict[str, str], event: str) -> tuple[float, float, float]:
    """(import s, first call s, whole process s) of one fresh process."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", COLD_PROBE],
        cwd=ROOT,
        env=env,
        input=event,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"cold start probe failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    found = json.loads(lines[-1][len("BENCH ") :])
    failure = problem(int(found["status"]), str(found["body"]))
    if failure is not None:
        raise RuntimeError(f"cold start probe: {failure}")
    return float(found["import"]), float(found["call"]), wall


def measure_cold_start(env: dict[str, str], setup: Setup) -> float:
    event = json.dumps(lambda_event(setup))
    cold_sample(env, event)  # warm the .pyc cache, as a precompiled layer would be
    samples = [cold_sample(env, event) for _ in range(COLD_RUNS)]
    imports = [s[0] * 1000 for s in samples]
    calls = [s[1] * 1000 for s in samples]
    totals = [(s[0] + s[1]) * 1000 for s in samples]
    walls = [s[2] * 1000 for s in samples]
    print(
        f"4. cold start of the proxy handler, median of {COLD_RUNS} fresh processes "
        f"({sys.version.split()[0]}, after one .pyc warm-up)"
    )
    print(
        f"   import + first call: {statistics.median(totals):.0f} ms  (import "
        f"{statistics.median(imports):.0f} ms, first tools/call {statistics.median(calls):.0f} ms"
        f" incl. DB connect and upstream client); whole process: "
        f"{statistics.median(walls):.0f} ms"
    )
    return statistics.median(totals)


# --------------------------------------------------------------------- main


def bench_environment() -> dict[str, str]:
    from shared.crypto import new_key

    os.environ.setdefault("IGRIS_ENV", "test")
    os.environ.setdefault("IGRIS_SECRET", "bench-secret-" + "x" * 40)
    os.environ.setdefault("IGRIS_ENCRYPTION_KEY", f"bench:{new_key()}")
    os.environ["IGRIS_ALLOW_PRIVATE_UPSTREAMS"] = "1"
    for name in ("DATABASE_URL", "DATABASE_URL_UNPOOLED"):
        if not os.environ.get(name):
            raise SystemExit(f"bench proxy needs {name} (run it with scripts/bench proxy)")
    return dict(os.environ)


def main() -> None:
    env = bench_environment()
    from functions.migrate.migrator import run_migrations
    from shared.config import get_settings

    get_settings.cache_clear()
    run_migrations()
    from tests.functions.proxy.support import UPSTREAM_SECRET, make_tenant

    with contextlib.ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="igris-bench-")))
        upstream = stack.enter_context(upstream_process(env))
        tenant = make_tenant(upstream.url, rules=ALLOW_ALL)
        proxy = stack.enter_context(igris_serve(env, log_dir, "serve"))
        setup = Setup(
            upstream_url=upstream.url,
            proxy_url=f"{proxy.url}/proxy/{tenant.slug}",
            upstream_pid=upstream.pid,
            proxy_pid=proxy.pid,
            upstream_auth=f"Bearer {UPSTREAM_SECRET}",
            proxy_auth=f"Bearer {tenant.key}",
            slug=tenant.slug,
        )
        print(
            f"proxy bench: upstream = mcp {_mcp_version()} MCPServer (stateless, JSON replies, "
            f"own process); proxy = igris serve (one uvicorn process) -> PgBouncer "
            f"(transaction mode) -> PostgreSQL; {os.cpu_count()} CPUs"
        )
        added = measure_latency(setup)
        trips = measure_round_trips(env, log_dir, setup)
        rate, errors = measure_throughput(setup, env["DATABASE_URL"])
        cold = measure_cold_start(env, setup)

    print("summary (targets from issue 5):")
    print(
        f"   added latency at the median     {added:8.2f} ms      target <= "
        f"{TARGET_ADDED_MS:g} ms   {verdict(added <= TARGET_ADDED_MS)}"
    )
    print(
        f"   PostgreSQL round trips per call {trips:8g}         target <= {TARGET_ROUND_TRIPS}"
        f"        {verdict(trips <= TARGET_ROUND_TRIPS)}"
    )
    print(
        f"   throughput, {CLIENTS} clients, {THROUGHPUT_SECONDS:g} s    {rate:8.1f} calls/s, "
        f"{errors} errors   target 0 errors   {verdict(errors == 0)}"
    )
    print(f"   cold start (import + 1st call)  {cold:8.0f} ms      (median of {COLD_RUNS})")


def _mcp_version() -> str:
    from importlib.metadata import version

    return version("mcp")


if __name__ == "__main__":
    main()
