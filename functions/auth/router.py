"""HTTP routes of the auth function: paths, status codes, permissions. No SQL, no commit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from functions.auth import service
from functions.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from shared.auth import OrgPrincipal, requires
from shared.db import SessionDep
from shared.ids import ApiKeyId
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from shared.permissions import Permission
from shared.schemas import Envelope, ListEnvelope, PageMeta

api_keys = APIRouter(prefix="/api/v1/api-keys", tags=["api-keys"])
KeyManager = Annotated[OrgPrincipal, Depends(requires(Permission.API_KEYS_OWN))]


@api_keys.post("", status_code=201, response_model=Envelope[ApiKeyCreated])
def create_api_key(body: ApiKeyCreate, principal: KeyManager, session: SessionDep) -> Any:
    """Create an API key; the full key is in this response only."""
    row, key = service.create_api_key(
        session, principal, name=body.name, role=body.role, expires_at=body.expires_at
    )
    return Envelope(data=ApiKeyCreated.model_validate({**row.model_dump(), "key": key}))


@api_keys.get("", response_model=ListEnvelope[ApiKeyRead])
def list_api_keys(
    principal: KeyManager,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """List API keys (all of the organization's for owners and admins, else your own)."""
    rows, next_cursor = service.list_api_keys(session, principal, limit=limit, cursor=cursor)
    return ListEnvelope(
        data=[ApiKeyRead.model_validate(row) for row in rows],
        meta=PageMeta(next_cursor=next_cursor),
    )


@api_keys.delete("/{key_id}", status_code=204, response_class=Response)
def revoke_api_key(key_id: ApiKeyId, principal: KeyManager, session: SessionDep) -> Response:
    """Revoke an API key: it fails with 401 from the next request on."""
    service.revoke_api_key(session, principal, key_id)
    return Response(status_code=204)
