"""HTTP routes of the proxy: MCP Streamable HTTP in JSON-response mode (API.md §5).

`POST /proxy/{slug}` (alias `/v1/mcp/{slug}`) carries one JSON-RPC message or a batch and is
answered with `application/json`; `GET` is 405 (a Lambda cannot hold a stream open);
`DELETE` ends the MCP session upstream. The route authenticates inside the pipeline (an
inline guard) so that no transaction stays open across the upstream call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from functions.proxy import fast, jsonrpc, pipeline
from functions.proxy.jsonrpc import JsonObject
from shared.auth import InlineGuard, Principal, presented_token
from shared.db import Transactions, TransactionsDep, session_scope
from shared.errors import MethodNotAllowed
from shared.governance.engine import Decision
from shared.logs import logger
from shared.mcp_client import UpstreamError
from shared.permissions import Permission
from shared.security import token_digest

router = APIRouter(tags=["proxy"])
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$", description="Server slug")]
Governed = Depends(InlineGuard(Permission.PROXY_CALL))


def _caller(
    request: Request, principal: Principal, trace_id: str, metadata: dict[str, Any]
) -> pipeline.Caller:
    headers = request.headers
    assert principal.organization_id is not None
    assert principal.role is not None
    return pipeline.Caller(
        principal=principal,
        organization_id=principal.organization_id,
        role=principal.role.value,
        user_ref=(headers.get("x-igris-user") or None),
        metadata=metadata,
        trace_id=trace_id,
        upstream_session_id=headers.get("mcp-session-id"),
        protocol_version=headers.get("mcp-protocol-version"),
    )


class ProxyRequest:
    """One POST/DELETE to the proxy: who calls which server, and the transactions it runs
    (each short; none spans an upstream call).

    A single tools/call whose caller and server were seen before takes the warm path
    (functions/proxy/fast.py: two statements in all); everything else authenticates here
    (`authenticate`) and takes the slow path, which also warms the cache for the next call.
    """

    def __init__(self, request: Request, slug: str, transactions: Transactions) -> None:
        self.metadata: dict[str, Any] = {}
        try:
            self.metadata = pipeline.parse_metadata(request.headers.get("x-igris-metadata"))
            self.bad_header: pipeline.BadHeader | None = None
        except pipeline.BadHeader as exc:
            self.bad_header = exc  # refused after authentication, so that it is audited
        self.request = request
        self.slug = slug
        self.transactions = transactions
        # Set by TraceIdMiddleware (which also puts it on every response).
        self.trace_id: str = getattr(request.state, "trace_id", None) or pipeline.trace_id_of(
            request.headers.get("x-igris-trace-id")
        )
        token = presented_token(request)
        self.credential = token_digest(token) if token else None
        # The warm path talks to the database directly; a caller that injects its own
        # transactions (the tests' rolled-back one) always gets the slow path.
        self.warm_allowed = (
            transactions is session_scope and self.credential is not None and not self.bad_header
        )
        self.result = pipeline.Result(upstream_session_id=request.headers.get("mcp-session-id"))
        self._caller: pipeline.Caller | None = None
        self._target: pipeline.Target | None = None

    def authenticate(self) -> None:
        if self._caller is not None:
            return
        with self.transactions() as session:
            principal = pipeline.authenticate(session, self.request)
            self._target = pipeline.resolve_target(
                session, str(principal.organization_id), self.slug
            )
            if self.bad_header is not None:
                pipeline.record_bad_header(
                    session,
                    principal,
                    self._target,
                    self.trace_id,
                    self.request.headers.get("x-igris-metadata", ""),
                )
        if self.bad_header is not None:
            raise self.bad_header
        self._caller = _caller(self.request, principal, self.trace_id, self.metadata)

    @property
    def caller(self) -> pipeline.Caller:
        self.authenticate()
        assert self._caller is not None
        return self._caller

    @property
    def target(self) -> pipeline.Target:
        self.authenticate()
        assert self._target is not None
        return self._target

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Igris-Trace-Id": self.trace_id}
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
        self.warm_up(call)
        caller, target = self.caller, self.target

        def record(outcome: pipeline.Outcome) -> None:
            with self.transactions() as session:
                pipeline.record_outcome(session, caller, target, call, outcome)

        return self.forward_call(
            caller,
            target,
            message,
            decision=call.decision,
            session_id=call.agent_session_id,
            record=record,
        )

    def forward_call(
        self,
        caller: pipeline.Caller,
        target: pipeline.Target,
        message: JsonObject,
        *,
        decision: Decision | None,
        session_id: str,
        record: Callable[[pipeline.Outcome], None],
    ) -> JsonObject:
        """Forward a decided call, mask the result, record the outcome (a failure to record
        it is logged: the decision is already on record)."""
        answer, outcome = pipeline.forward_call(caller, target, message, decision, session_id)
        if outcome.upstream_session_id:
            self.result.upstream_session_id = outcome.upstream_session_id
        try:
            record(outcome)
        except Exception:
            logger.exception(
                "could not record a tool call's outcome", extra={"trace": self.trace_id}
            )
        if answer is None:
            raise pipeline.SessionExpired()
        return answer

    def warm_up(self, call: pipeline.CallDecision) -> None:
        """Keep what this decision read for the next call's warm path."""
        if not self.warm_allowed or self.credential is None or call.decision is None:
            return
        caller, target = self.caller, self.target
        fast.remember(
            self.credential,
            self.slug,
            fast.Warm(
                principal=caller.principal,
                role=caller.role,
                target=target,
                server_version=target.version,
                snapshots=call.snapshots,
                policies=fast.policies_fingerprint(call.snapshots),
                ai_systems=call.ai_systems,
                agent_session_id=call.agent_session_id,
            ),
        )

    def warm_call(self, message: JsonObject) -> JsonObject | None:
        """The warm path of one tools/call; None when it cannot decide (go slow)."""
        warm = (
            fast.lookup(self.credential, self.slug)
            if self.warm_allowed and self.credential
            else None
        )
        if warm is None or self.credential is None:
            return None
        caller = _caller(self.request, warm.principal, self.trace_id, self.metadata)
        call = fast.decide(warm, caller, message)
        if isinstance(call, str):
            fast.forget(self.credential, self.slug)
            return None
        if isinstance(call, dict):
            return call
        if not call.forward:
            return call.refusal

        def record(outcome: pipeline.Outcome) -> None:
            fast.record_outcome(caller, warm, call, outcome)

        return self.forward_call(
            caller,
            warm.target,
            message,
            decision=call.decision,
            session_id=call.agent_session_id,
            record=record,
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
            if isinstance(exc, pipeline.UpstreamSessionExpired):
                raise pipeline.SessionExpired() from None
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
        if (
            not incoming.batch
            and incoming.messages[0].get("method") == "tools/call"
            and jsonrpc.is_request(incoming.messages[0])
        ):
            warm_answer = self.warm_call(incoming.messages[0])
            if warm_answer is not None:
                return JSONResponse(warm_answer, headers=self.headers)
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
    ProxyRequest(request, slug, transactions).authenticate()  # 401/403/404 come first
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
