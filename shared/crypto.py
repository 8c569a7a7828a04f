"""Encryption at rest for upstream credentials: AES-256-GCM under IGRIS_ENCRYPTION_KEY.

IGRIS_ENCRYPTION_KEY holds one or more keys, comma-separated, each `<key id>:<base64 of
32 bytes>` (a bare base64 key gets the id `default`). The first key seals; every key can
open, so keys rotate by putting a new one first and running `igris rotate-credentials`.
Each ciphertext is stored with the id of the key that sealed it and is bound (as GCM
associated data) to the row it belongs to, so it cannot be moved to another row.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import get_settings

NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CryptoError(RuntimeError):
    """The key is missing or malformed, or a ciphertext does not open (wrong key, tampered,
    or moved to another row). Messages never contain key material or plaintext."""


@dataclass(frozen=True)
class Keyring:
    current_id: str
    keys: dict[str, bytes]


def _decode_key(value: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise CryptoError("IGRIS_ENCRYPTION_KEY: a key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"IGRIS_ENCRYPTION_KEY: each key must be {KEY_BYTES} bytes")
    return raw


def parse_keyring(value: str) -> Keyring:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        key_id, sep, material = entry.partition(":")
        if not sep:
            key_id, material = "default", entry
        if not _KEY_ID.match(key_id):
            raise CryptoError("IGRIS_ENCRYPTION_KEY: key ids are 1-64 of [A-Za-z0-9_.-]")
        if key_id in keys:
            raise CryptoError(f"IGRIS_ENCRYPTION_KEY: key id {key_id!r} appears twice")
        keys[key_id] = _decode_key(material)
        order.append(key_id)
    if not order:
        raise CryptoError("IGRIS_ENCRYPTION_KEY is not set")
    return Keyring(current_id=order[0], keys=keys)


@lru_cache(maxsize=1)
def keyring() -> Keyring:
    """The process's keys, read once from settings (fails closed when absent)."""
    secret = get_settings().encryption_key
    return parse_keyring(secret.get_secret_value() if secret else "")


def new_key() -> str:
    """A fresh key in the IGRIS_ENCRYPTION_KEY format (without an id)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def seal(plaintext: str, *, bound_to: str, ring: Keyring | None = None) -> tuple[bytes, str]:
    """Encrypt with the current key; returns (nonce || ciphertext+tag, key id)."""
    ring = ring or keyring()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.current_id]).encrypt(
        nonce, plaintext.encode("utf-8"), bound_to.encode("utf-8")
    )
    return nonce + sealed, ring.current_id


def unseal(blob: bytes, key_id: str, *, bound_to: str, ring: Keyring | None = None) -> str:
    ring = ring or keyring()
    key = ring.keys.get(key_id)
    if key is None:
        raise CryptoError(f"no key with id {key_id!r} in IGRIS_ENCRYPTION_KEY")
    try:
        plain = AESGCM(key).decrypt(
            bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:]), bound_to.encode("utf-8")
        )
    except InvalidTag:
        raise CryptoError("a credential does not decrypt (wrong key or tampered)") from None
    return plain.decode("utf-8")
