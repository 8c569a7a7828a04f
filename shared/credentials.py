"""Re-encrypting stored upstream credentials under the current key (key rotation)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from shared.crypto import Keyring, keyring, seal, unseal
from shared.models import McpServer
from shared.upstream import credential_binding


@dataclass(frozen=True)
class RotationResult:
    rotated: int
    already_current: int


def rotate_credentials(session: Session, ring: Keyring | None = None) -> RotationResult:
    """Re-seal every credential sealed by an older key with the current (first) key, in the
    caller's transaction. Rows are locked, so a concurrent update cannot be lost."""
    ring = ring or keyring()
    query = (
        select(McpServer)
        .where(col(McpServer.credential_ciphertext).is_not(None))
        .order_by(col(McpServer.id))
        .with_for_update()
    )
    rotated = current = 0
    for server in session.scalars(query):
        if server.credential_key_id == ring.current_id:
            current += 1
            continue
        assert server.credential_ciphertext is not None
        assert server.credential_key_id is not None
        binding = credential_binding(server)
        plain = unseal(
            server.credential_ciphertext, server.credential_key_id, bound_to=binding, ring=ring
        )
        server.credential_ciphertext, server.credential_key_id = seal(
            plain, bound_to=binding, ring=ring
        )
        session.add(server)
        rotated += 1
    session.flush()
    return RotationResult(rotated=rotated, already_current=current)
