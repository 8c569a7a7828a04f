"""Agent-session lifecycle rules shared by the policies function (the kill switch) and the
proxy (which opens, reuses and completes sessions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

IDLE_COMPLETION: Final = timedelta(minutes=30)


def effective_status(status: str, last_activity_at: datetime, now: datetime) -> str:
    """An active session idle for 30 minutes is completed, whether or not a call has come
    since to record it; a suspended one never completes by itself."""
    if status == "active" and now - last_activity_at >= IDLE_COMPLETION:
        return "completed"
    return status
