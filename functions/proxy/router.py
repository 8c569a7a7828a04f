"""HTTP routes of the proxy: MCP Streamable HTTP in JSON-response mode (API.md §5).

`POST /proxy/{slug}` (alias `/v1/mcp/{slug}`) carries one JSON-RPC message or a batch and is
answered with `application/json`; `GET` is 405 (a Lambda cannot hold a stream open);
`DELETE` ends the MCP session upstream. The route authenticates inside the pipeline (an
inline guard) so that no transaction stays open across the upstream call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from functions.proxy import jsonrpc, pipeline
from functions.proxy.jsonrpc import JsonObject
from shared.auth import InlineGuard
from shared.db import Transactions, TransactionsDep
from shared.errors import MethodNotAllowed
from shared.logs import logger
from shared.mcp_client import UpstreamError, UpstreamTimeout
from shared.permissions import Permission

router = APIRouter(tags=["proxy"])
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$", description="Server slug")]
Governed = Depends(InlineGuard(Permission.PROXY_CALL))


def _caller(request: Request, principal: Any) -> pipeline.Caller:
    headers = request.headers
    return pipeline.Caller(
        principal=principal,
        organization_id=principal.organization_id,
        role=principal.role.value,
        user_ref=(headers.get("x-igris-user") or None),
        metadata=pipeline.parse_metadata(headers.get("x-igris-metadata")),
        trace_id=pipeline.trace_id_of(headers.get("x-igris-trace-id")),
        upstream_session_id=headers.get("mcp-session-id"),
        protocol_version=headers.get("mcp-protocol-version"),
    )


class ProxyRequest:
    """One POST/DELETE to the proxy: who calls which server, and the transactions it runs
    (each short; none spans an upstream call)."""

    def __init__(self, request: Request, slug: str, transactions: Transactions) -> None:
        pipeline.parse_metadata(request.headers.get("x-igris-metadata"))  # 400 before any work
        self.transactions = transactions
        with transactions() as session:
            principal = pipeline.authenticate(session, request)
            self.target = pipeline.resolve_target(session, str(principal.organization_id), slug)
        self.caller = _caller(request, principal)
        self.result = pipeline.Result(upstream_session_id=self.caller.upstream_session_id)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Igris-Trace-Id": self.caller.trace_id}
        if self.result.upstream_session_id:
            headers["Mcp-Session-Id"] = self.result.upstream_session_id
        return headers

    def tools_call(self, message: JsonObject) -> JsonObject | None:
        # The decision is committed before anything leaves; if it cannot be, the exception
        # becomes a 503 and nothing is forwarded (fail closed).
        with self.transactions() as session:
            call = pipeline.decide_call(session, self.caller, self.target, message)
        if not isinstance(call, pipeline.CallDecision):
            return call
        if not call.forward:
            return call.refusal
        started = pipeline.now_ms()
        try:
            reply = pipeline.forward(self.caller, self.target, message)
        except UpstreamError as exc:
            timed_out = isinstance(exc, UpstreamTimeout)
            self.record_outcome(
                call,
                outcome="timeout" if timed_out else "error",
                started=started,
                size=None,
                error=exc.message,
                session_id=None,
            )
            return pipeline.upstream_failure(message, call.agent_session_id, exc)
        answer = pipeline.answer_of(reply, message)
        assert answer is not None
        answer = pipeline.redact_result(answer, call.decision)
        failed = "error" in answer or bool((answer.get("result") or {}).get("isError"))
        self.result.upstream_session_id = reply.session_id or self.result.upstream_session_id
        self.record_outcome(
            call,
            outcome="error" if failed else "ok",
            started=started,
            size=reply.raw_size,
            error=None,
            session_id=reply.session_id,
        )
        return answer

    def record_outcome(
        self,
        call: pipeline.CallDecision,
        *,
        outcome: str,
        started: float,
        size: int | None,
        error: str | None,
        session_id: str | None,
    ) -> None:
        """The outcome is recorded after the answer came back; the decision already is, so
        a failure here is logged, not turned into a failed call."""
        try:
            with self.transactions() as session:
                pipeline.record_outcome(
                    session,
                    self.caller,
                    self.target,
                    call,
                    outcome=outcome,
                    latency_ms=round(pipeline.now_ms() - started),
                    result_size=size,
                    error=error,
                    upstream_session_id=session_id,
                )
        except Exception:
            logger.exception(
                "could not record a tool call's outcome", extra={"trace": self.caller.trace_id}
            )

    def other(self, message: JsonObject) -> JsonObject | None:
        """Any other message: forwarded; requests are audited (tools/list also filtered)."""
        started = pipeline.now_ms()
        is_request = jsonrpc.is_request(message)
        try:
            reply = pipeline.forward(self.caller, self.target, message)
        except UpstreamError as exc:
            if not is_request:
                return None
            with self.transactions() as session:
                pipeline.record_passthrough(
                    session,
                    self.caller,
                    self.target,
                    message,
                    outcome="error",
                    latency_ms=round(pipeline.now_ms() - started),
                    extra={"error": exc.message},
                )
            return pipeline.upstream_failure(message, None, exc)
        self.result.upstream_session_id = reply.session_id or self.result.upstream_session_id
        if not is_request:
            return None
        answer = pipeline.answer_of(reply, message)
        assert answer is not None
        with self.transactions() as session:
            if message["method"] == "tools/list" and "result" in answer:
                answer = pipeline.filter_and_refresh_tools(
                    session, self.caller, self.target, answer
                )
            pipeline.record_passthrough(
                session,
                self.caller,
                self.target,
                message,
                outcome="error" if "error" in answer else "ok",
                latency_ms=round(pipeline.now_ms() - started),
            )
        return answer

    def handle(self, body: bytes) -> Response:
        try:
            incoming = jsonrpc.parse(body)
        except jsonrpc.InvalidMessage as exc:
            with self.transactions() as session:
                pipeline.record_invalid(session, self.caller, self.target, body, exc.code)
            return JSONResponse(
                jsonrpc.error(None, exc.code, str(exc)), status_code=400, headers=self.headers
            )
        answers = []
        for message in incoming.messages:
            if message.get("method") == "tools/call" and jsonrpc.is_request(message):
                answer = self.tools_call(message)
            else:
                answer = self.other(message)
            if answer is not None:
                answers.append(answer)
        if not answers:
            return Response(status_code=202, headers=self.headers)
        return JSONResponse(answers if incoming.batch else answers[0], headers=self.headers)


@router.post("/proxy/{slug}", dependencies=[Governed])
@router.post("/v1/mcp/{slug}", dependencies=[Governed])
async def post_messages(slug: Slug, request: Request, transactions: TransactionsDep) -> Response:
    """Send JSON-RPC messages to the server, governed (MCP Streamable HTTP, JSON replies)."""
    body = await request.body()

    def run() -> Response:
        return ProxyRequest(request, slug, transactions).handle(body)

    return await run_in_threadpool(run)


@router.get("/proxy/{slug}", dependencies=[Governed])
@router.get("/v1/mcp/{slug}", dependencies=[Governed])
def open_stream(slug: Slug, request: Request, transactions: TransactionsDep) -> Response:
    """Not supported: a serverless function cannot hold an event stream open (405)."""
    ProxyRequest(request, slug, transactions)  # who asks is still checked first (401/403/404)
    raise MethodNotAllowed(
        "This endpoint answers POSTs with JSON; it does not stream.",
        headers={"Allow": "POST, DELETE"},
    )


@router.delete("/proxy/{slug}", dependencies=[Governed])
@router.delete("/v1/mcp/{slug}", dependencies=[Governed])
def end_session(slug: Slug, request: Request, transactions: TransactionsDep) -> Response:
    """End the MCP session upstream (the agent session stays, for the audit trail)."""
    proxy = ProxyRequest(request, slug, transactions)
    if proxy.caller.upstream_session_id:
        pipeline.end_upstream_session(proxy.caller, proxy.target)
        with transactions() as session:
            pipeline.record_passthrough(
                session,
                proxy.caller,
                proxy.target,
                {"method": "session/delete"},
                outcome="ok",
                latency_ms=None,
            )
    return Response(status_code=204, headers=proxy.headers)
