"""Lambda entry point of the migrate function.

Two kinds of event:
- a direct invoke (`{}` or `{"revision": "head"}`): migrate and return what changed; a
  failure raises, so the invoke reports an error;
- a CloudFormation custom resource request (`RequestType` Create/Update/Delete with a
  `ResponseURL`): Create and Update migrate, Delete does nothing. CloudFormation is always
  answered, including when migrating fails or the function is about to time out, so a
  failed migration fails the deployment instead of hanging it for an hour.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any, Protocol

from functions.migrate.migrator import run_migrations
from shared.config import get_settings
from shared.logs import logger

PHYSICAL_RESOURCE_ID = "igris-database-migrations"
# Answer FAILED this long before the Lambda timeout if migrating is still running.
TIMEOUT_MARGIN_SECONDS = 5.0


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def handler(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    if _is_cloudformation(event):
        return _handle_custom_resource(event, context)
    revision = str(event.get("revision", "head")) if isinstance(event, dict) else "head"
    return run_migrations(revision=revision).as_dict()


def _is_cloudformation(event: Any) -> bool:
    return isinstance(event, dict) and "RequestType" in event and "ResponseURL" in event


def _handle_custom_resource(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    reply = _OneReply(event)
    timer: threading.Timer | None = None
    if context is not None:
        seconds = context.get_remaining_time_in_millis() / 1000 - TIMEOUT_MARGIN_SECONDS
        timer = threading.Timer(
            max(seconds, 0.0), reply.send, ("FAILED", "migration timed out", {})
        )
        timer.daemon = True
        timer.start()
    try:
        stale = _stale_version(event)
        if event["RequestType"] == "Delete":
            reply.send("SUCCESS", "nothing to do on delete", {})
        elif stale is not None:
            reply.send("SUCCESS", stale, {})
        else:
            result = run_migrations().as_dict()
            reply.send("SUCCESS", "migrated", {k: str(v) for k, v in result.items()})
    except Exception as exc:  # every failure must reach CloudFormation
        logger.exception("migration failed")
        reply.send("FAILED", f"migration failed: {type(exc).__name__}: {exc}"[:1000], {})
    finally:
        if timer is not None:
            timer.cancel()
    return {"status": reply.status}


def _stale_version(event: dict[str, Any]) -> str | None:
    """Why not to migrate, when the request names another version of this function.

    A rolled-back deployment sends an Update carrying the *previous* function version while
    the new code still answers; migrating again (or failing) would leave the stack stuck in
    UPDATE_ROLLBACK_FAILED, and schema changes are never undone automatically anyway.
    """
    requested = str(event.get("ResourceProperties", {}).get("MigrateFunctionVersion", ""))
    running = get_settings().lambda_function_version
    if not requested or running in {None, "$LATEST"}:
        return None
    if requested.rsplit(":", 1)[-1] == running:
        return None
    return f"skipped: request is for function version {requested}, this is version {running}"


class _OneReply:
    """Sends exactly one response to CloudFormation's pre-signed URL."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self.status: str | None = None
        self._lock = threading.Lock()

    def send(self, status: str, reason: str, data: dict[str, str]) -> None:
        with self._lock:
            if self.status is not None:
                return
            self.status = status
        body = json.dumps(
            {
                "Status": status,
                "Reason": reason,
                "PhysicalResourceId": self.event.get("PhysicalResourceId", PHYSICAL_RESOURCE_ID),
                "StackId": self.event.get("StackId"),
                "RequestId": self.event.get("RequestId"),
                "LogicalResourceId": self.event.get("LogicalResourceId"),
                "NoEcho": False,
                "Data": data,
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - CloudFormation's pre-signed https URL
            self.event["ResponseURL"],
            data=body,
            method="PUT",
            headers={"Content-Type": "", "Content-Length": str(len(body))},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                logger.info(
                    "answered CloudFormation", extra={"status": status, "http": response.status}
                )
        except OSError:
            logger.exception("could not answer CloudFormation", extra={"status": status})
