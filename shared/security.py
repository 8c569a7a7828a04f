"""Credential primitives: random tokens, their digests, passwords, API key format.

Secrets are never stored: session tokens and API keys are kept as SHA-256 digests (they
carry ≥ 256 / 192 bits of randomness, so a fast digest is enough), passwords as argon2id.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from functools import lru_cache
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane (~30 ms here).
ARGON2_MEMORY_KIB: Final = 19 * 1024
ARGON2_TIME_COST: Final = 2
ARGON2_PARALLELISM: Final = 1

SESSION_TOKEN_BYTES: Final = 32  # 256 bits
API_KEY_PREFIX: Final = "ig_"
API_KEY_BYTES: Final = 24  # 192 bits
API_KEY_PATTERN: Final = re.compile(r"^ig_[A-Za-z0-9_-]{32}$")
API_KEY_START_LENGTH: Final = 8


def new_session_token() -> str:
    """A fresh session token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def new_api_key() -> str:
    """A fresh API key: `ig_` + 192 random bits (32 URL-safe characters)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def is_api_key(value: str) -> bool:
    """Well-formed `ig_…` key (checked before any database work)."""
    return API_KEY_PATTERN.fullmatch(value) is not None


def looks_like_api_key(value: str) -> bool:
    """Presented as an API key, well-formed or not (so it is never tried as a session)."""
    return value.startswith(API_KEY_PREFIX)


def token_digest(token: str) -> str:
    """SHA-256 hex digest: what the database stores for a session token or an API key."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
    )


def hash_password(password: str) -> str:
    """argon2id PHC string."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches. With no hash (unknown user), still spends the same work
    on a dummy hash so that response timing does not reveal whether the account exists."""
    if password_hash is None:
        with contextlib.suppress(VerificationError):
            _hasher().verify(_dummy_hash(), password + "\x00")
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash was made with weaker parameters than today's."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))
