"""Races on memberships and invitations, with real concurrent transactions through PgBouncer.

A third connection holds the contested row's lock while both requests start, so that both
pass their first (unlocked) checks and then queue on the lock; releasing it lets them run one
after the other. Without the lock-then-re-read in the service both would succeed: two owners
demoting each other would leave the organization without an owner, and one invitation would
be accepted twice. These rows are committed for real (two transactions must see them), so the
fixture deletes what it made; the audit events stay, as they always do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select, text
from sqlmodel import Session, col

from functions.orgs.main import app
from shared.config import get_settings
from shared.db import get_session, make_engine, session_scope
from shared.models import Invitation, Member, Organization, User
from shared.permissions import Role
from tests.factories import Actor, make_actor, make_invitation, make_session, make_user
from tests.functions.orgs.support import BASE


@dataclass
class Race:
    first: Actor
    second: Actor
    invitation_id: str
    invitee_tokens: tuple[str, str]


@pytest.fixture
def pooled() -> Iterator[Engine]:
    """Room for two concurrent requests (the application engine holds one connection)."""
    engine = make_engine(get_settings().pooled_url(), pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def race(pooled: Engine, migrated: None) -> Iterator[Race]:
    with session_scope(pooled) as db:
        first = make_actor(db, Role.OWNER)
        second = make_actor(db, Role.OWNER, org=first.org)
        invitee = make_user(db)
        invitation = make_invitation(db, first.org, first.user, email=invitee.email)
        tokens = (make_session(db, invitee)[1], make_session(db, invitee)[1])
        race = Race(first, second, invitation.id, tokens)
    yield race
    with session_scope(pooled) as db:
        db.execute(delete(Organization).where(col(Organization.id) == first.org.id))
        users = [first.user.id, second.user.id, invitee.id]
        db.execute(delete(User).where(col(User.id).in_(users)))


@contextmanager
def real_transactions(engine: Engine) -> Iterator[None]:
    """Requests get their own committed transaction on `engine`, as in production."""

    def request_session() -> Iterator[Session]:
        with session_scope(engine) as session:
            yield session

    app.dependency_overrides[get_session] = request_session
    try:
        yield
    finally:
        app.dependency_overrides.pop(get_session, None)


def contend(lock_sql: str, row_id: str, calls: list[Callable[[], httpx2.Response]]) -> list[Any]:
    """Run `calls` concurrently while another transaction holds the row lock, releasing it
    once every call is queued on it (and before anything waits for the calls)."""
    blocker = make_engine(get_settings().direct_url())
    pool = ThreadPoolExecutor(len(calls))
    try:
        with blocker.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(text(lock_sql), {"id": row_id})
                me = conn.scalar(text("SELECT pg_backend_pid()"))
                futures = [pool.submit(call) for call in calls]
                deadline = time.monotonic() + 20
                while conn.scalar(text(_WAITING), {"me": me}) < len(calls):
                    assert time.monotonic() < deadline, "the requests never queued on the lock"
                    finished = [f.result().text for f in futures if f.done()]
                    assert not finished, f"a request did not wait for the lock: {finished}"
                    time.sleep(0.02)
            finally:
                transaction.rollback()
        return [future.result(timeout=30) for future in futures]
    finally:
        pool.shutdown(wait=True)
        blocker.dispose()


_WAITING = "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid <> :me"


def caller(
    headers: dict[str, str], route: str, body: dict[str, Any]
) -> Callable[[], httpx2.Response]:
    def call() -> httpx2.Response:
        with TestClient(app, raise_server_exceptions=False) as client:
            return client.post(f"{BASE}/{route}", json=body, headers=headers)

    return call


def owners(engine: Engine, organization_id: str) -> int:
    with session_scope(engine) as db:
        query = select(func.count()).where(
            col(Member.organization_id) == organization_id, col(Member.role) == "owner"
        )
        return int(db.scalar(query) or 0)


LOCK_ORGANIZATION = "SELECT id FROM organization WHERE id = :id FOR UPDATE"


@pytest.mark.parametrize("how", ["demote each other", "both leave", "demote themselves"])
def test_two_owners_racing_never_leave_the_organization_ownerless(
    race: Race, pooled: Engine, how: str
) -> None:
    first, second = race.first, race.second
    if how == "demote each other":
        calls = [
            caller(
                first.headers, "update-member-role", {"memberId": second.member.id, "role": "admin"}
            ),
            caller(
                second.headers, "update-member-role", {"memberId": first.member.id, "role": "admin"}
            ),
        ]
    elif how == "both leave":
        calls = [
            caller(actor.headers, "leave", {"organizationId": first.org.id})
            for actor in (first, second)
        ]
    else:
        calls = [
            caller(
                actor.headers, "update-member-role", {"memberId": actor.member.id, "role": "ciso"}
            )
            for actor in (first, second)
        ]
    with real_transactions(pooled):
        responses = contend(LOCK_ORGANIZATION, first.org.id, calls)
    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] == 200, [r.text for r in responses]
    assert statuses[1] in {400, 403}, [r.text for r in responses]
    assert owners(pooled, first.org.id) == 1


def test_an_invitation_accepted_twice_at_once_makes_one_member(race: Race, pooled: Engine) -> None:
    calls = [
        caller(
            {"Authorization": f"Bearer {token}"},
            "accept-invitation",
            {"invitationId": race.invitation_id},
        )
        for token in race.invitee_tokens
    ]
    with real_transactions(pooled):
        responses = contend(
            "SELECT id FROM invitation WHERE id = :id FOR UPDATE", race.invitation_id, calls
        )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 400], [r.text for r in responses]
    with session_scope(pooled) as db:
        members = db.scalar(
            select(func.count()).where(col(Member.organization_id) == race.first.org.id)
        )
        invitation = db.get(Invitation, race.invitation_id)
        assert invitation is not None
        assert invitation.status == "accepted"
    assert members == 3
