"""JSON-RPC 2.0 as the proxy speaks it: parsing, validation and the refusal errors of
API.md §5. Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
DENIED: Final = -32001
SESSION_SUSPENDED: Final = -32002
RATE_LIMITED: Final = -32003
APPROVAL_REQUIRED: Final = -32004
UPSTREAM_UNAVAILABLE: Final = -32005
NO_ACTIVE_BAA: Final = -32006

MESSAGES: Final = {
    DENIED: "Denied by policy",
    SESSION_SUSPENDED: "Agent session suspended",
    RATE_LIMITED: "Rate limited",
    APPROVAL_REQUIRED: "Approval required",
    UPSTREAM_UNAVAILABLE: "Upstream unavailable or timed out",
    NO_ACTIVE_BAA: "No active BAA covers this server",
}

JsonObject = dict[str, Any]


class InvalidMessage(ValueError):
    """The body is not JSON (`code` -32700) or not JSON-RPC (-32600)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Incoming:
    """The parsed body: its messages, and whether they came as a batch."""

    messages: list[JsonObject]
    batch: bool


def _valid_id(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


def check_message(message: object) -> JsonObject:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise InvalidMessage(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 object")
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise InvalidMessage(INVALID_REQUEST, "Invalid Request: method must be a string")
        if "params" in message and not isinstance(message["params"], dict | list):
            raise InvalidMessage(INVALID_REQUEST, "Invalid Request: params must be structured")
        if "id" in message and not _valid_id(message["id"]):
            raise InvalidMessage(INVALID_REQUEST, "Invalid Request: bad id")
        if message["method"] == "tools/call" and "id" not in message:
            # A tool call sent as a notification would get no answer, so no refusal could
            # be returned: it is never forwarded.
            raise InvalidMessage(INVALID_REQUEST, "Invalid Request: tools/call needs an id")
        return message
    # A response to a request the upstream sent the client (e.g. sampling, elicitation).
    if ("result" in message) == ("error" in message) or "id" not in message:
        raise InvalidMessage(INVALID_REQUEST, "Invalid Request: neither request nor response")
    if not _valid_id(message["id"]):
        raise InvalidMessage(INVALID_REQUEST, "Invalid Request: bad id")
    return message


def parse(body: bytes) -> Incoming:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidMessage(PARSE_ERROR, "Parse error") from None
    if isinstance(data, list):
        if not data:
            raise InvalidMessage(INVALID_REQUEST, "Invalid Request: empty batch")
        return Incoming(messages=[check_message(item) for item in data], batch=True)
    return Incoming(messages=[check_message(data)], batch=False)


def is_request(message: JsonObject) -> bool:
    return "method" in message and "id" in message


def is_notification(message: JsonObject) -> bool:
    return "method" in message and "id" not in message


def error(
    request_id: object, code: int, message: str, data: JsonObject | None = None
) -> JsonObject:
    body: JsonObject = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def refusal(request_id: object, code: int, data: JsonObject) -> JsonObject:
    """A governance refusal: a JSON-RPC error in a 200 reply, `error.data` filled in."""
    return error(request_id, code, MESSAGES[code], {k: v for k, v in data.items() if v is not None})
