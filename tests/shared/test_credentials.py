"""Key rotation re-seals stored credentials under the newest key, losing none."""

from __future__ import annotations

from sqlmodel import Session

from shared.config import get_settings
from shared.credentials import rotate_credentials
from shared.crypto import new_key, parse_keyring, seal, unseal
from shared.upstream import credential_binding
from tests.factories import make_org, make_server


def test_rotation_moves_old_credentials_to_the_new_key(db: Session) -> None:
    old, new = new_key(), new_key()
    old_ring = parse_keyring(f"old:{old}")
    org = make_org(db)
    servers = [make_server(db, org) for _ in range(3)]
    for index, server in enumerate(servers):
        server.credential_ciphertext, server.credential_key_id = seal(
            f"secret-{index}", bound_to=credential_binding(server), ring=old_ring
        )
        db.add(server)
    db.flush()
    # The suite's own key stays readable: other rows in the shared test database use it.
    suite_key = get_settings().encryption_key
    assert suite_key is not None
    rotated_ring = parse_keyring(f"new:{new},old:{old},{suite_key.get_secret_value()}")
    first = rotate_credentials(db, rotated_ring)
    assert first.rotated >= 3
    again = rotate_credentials(db, rotated_ring)
    assert again.rotated == 0
    new_only = parse_keyring(f"new:{new}")  # the old key can now be retired
    for index, server in enumerate(servers):
        db.refresh(server)
        assert server.credential_key_id == "new"
        assert server.credential_ciphertext is not None
        assert (
            unseal(
                server.credential_ciphertext,
                "new",
                bound_to=credential_binding(server),
                ring=new_only,
            )
            == f"secret-{index}"
        )
