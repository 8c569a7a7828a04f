"""Lambda entry point of the backup function.

Events: EventBridge's Scheduled Event (its `time` is the scheduled time, identical on every
retried or duplicated delivery), or a direct invoke `{"time": "2026-11-29T03:00:00Z"}` or
`{}` (now, to the minute). The result says whether this run wrote the backup; a failure
raises, so the invocation fails and Lambda retries it.
"""

from __future__ import annotations

from typing import Any, Protocol

from functions.backup.service import run_backup, scheduled_time_of
from shared.logs import logger


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    time_limit = context.get_remaining_time_in_millis() / 1000
    return run_backup(scheduled_time_of(event), time_limit=time_limit).as_dict()
