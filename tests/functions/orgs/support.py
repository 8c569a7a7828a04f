"""Helpers shared by the orgs function's tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import ColumnElement, func, select
from sqlmodel import Session, SQLModel, col

from shared.models import AuditEvent, User
from shared.models import Session as UserSession
from tests.factories import make_session, make_user

BASE = "/api/auth/organization"


class Credentials(Protocol):
    @property
    def headers(self) -> dict[str, str]: ...


@dataclass
class SignedIn:
    """A signed-in user, in no organization yet."""

    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def signed_in(db: Session, **user: Any) -> SignedIn:
    row = make_user(db, **user)
    _, token = make_session(db, row)
    return SignedIn(user=row, token=token)


def post(client: TestClient, who: Credentials | None, route: str, **body: Any) -> httpx2.Response:
    """A bearer-authenticated call, as the Better Auth client makes from Node (no cookies:
    a cookie set by an earlier response would turn on the Origin check)."""
    client.cookies.clear()
    return client.post(f"{BASE}/{route}", json=body, headers=who.headers if who else {})


def get(client: TestClient, who: Credentials | None, route: str, **params: Any) -> httpx2.Response:
    client.cookies.clear()
    return client.get(f"{BASE}/{route}", params=params, headers=who.headers if who else {})


def ok(response: httpx2.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx2.Response, status: int, code: str) -> None:
    """A Better Auth-shaped refusal: `{code, message}` with the given status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"], body


def events(db: Session, organization_id: str) -> list[AuditEvent]:
    query = (
        select(AuditEvent)
        .where(col(AuditEvent.chain_id) == organization_id)
        .order_by(col(AuditEvent.seq))
    )
    return list(db.scalars(query))


def operations(db: Session, organization_id: str) -> list[str | None]:
    return [event.operation for event in events(db, organization_id)]


def count(db: Session, model: type[SQLModel], *where: ColumnElement[bool]) -> int:
    return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def active_organization(db: Session, user: User) -> str | None:
    """The active organization of the user's only session, as committed."""
    query = select(col(UserSession.active_organization_id)).where(
        col(UserSession.user_id) == user.id
    )
    [value] = list(db.scalars(query))
    return value
