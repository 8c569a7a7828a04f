"""Credentials at rest: AES-256-GCM, key ids for rotation, bound to their row."""

from __future__ import annotations

import pytest

from shared.crypto import CryptoError, new_key, parse_keyring, seal, unseal


def test_seal_and_unseal_round_trip() -> None:
    ring = parse_keyring(f"k1:{new_key()}")
    blob, key_id = seal("s3cr3t-token", bound_to="srv_1", ring=ring)
    assert key_id == "k1"
    assert b"s3cr3t-token" not in blob
    assert unseal(blob, key_id, bound_to="srv_1", ring=ring) == "s3cr3t-token"


def test_nonces_differ() -> None:
    ring = parse_keyring(new_key())
    assert seal("x", bound_to="a", ring=ring)[0] != seal("x", bound_to="a", ring=ring)[0]


def test_a_ciphertext_moved_to_another_row_does_not_open() -> None:
    ring = parse_keyring(new_key())
    blob, key_id = seal("x", bound_to="srv_1", ring=ring)
    with pytest.raises(CryptoError):
        unseal(blob, key_id, bound_to="srv_2", ring=ring)


def test_tampering_is_detected() -> None:
    ring = parse_keyring(new_key())
    blob, key_id = seal("x", bound_to="srv_1", ring=ring)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CryptoError, match="tampered"):
        unseal(tampered, key_id, bound_to="srv_1", ring=ring)


def test_rotation_keeps_old_keys_readable() -> None:
    old_key, new = new_key(), new_key()
    old_ring = parse_keyring(f"old:{old_key}")
    blob, key_id = seal("x", bound_to="r", ring=old_ring)
    rotated = parse_keyring(f"new:{new},old:{old_key}")
    assert rotated.current_id == "new"
    assert unseal(blob, key_id, bound_to="r", ring=rotated) == "x"
    assert seal("x", bound_to="r", ring=rotated)[1] == "new"


@pytest.mark.parametrize(
    "value", ["", "k1:not-base64!!", "k1:c2hvcnQ", f"bad id:{new_key()}", "a:{k},a:{k}"]
)
def test_bad_keyrings_fail_closed(value: str) -> None:
    key = new_key()
    with pytest.raises(CryptoError) as caught:
        parse_keyring(value.replace("{k}", key))
    assert key not in str(caught.value)


def test_unknown_key_id() -> None:
    ring = parse_keyring(new_key())
    with pytest.raises(CryptoError, match="no key"):
        unseal(b"0" * 40, "gone", bound_to="r", ring=ring)
