"""Where a backup lives and what its manifest says.

Shared by the backup function (which writes both) and `igris restore` (which reads them),
so the key layout and the manifest's fields have exactly one definition.

Keys are derived from the *scheduled* time, never the wall clock: a retried delivery of
the same schedule names the same object, and a backup's age can be read from its key
(retention needs no `LastModified`, which a copy or a restore of the bucket would change).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"
#: Bumped when a field changes meaning; a restore refuses versions it does not know.
MANIFEST_VERSION: Final = 1


class ChainHead(BaseModel):
    """The newest link of one audit chain when the dump was taken."""

    model_config = ConfigDict(frozen=True)

    seq: int
    hash: str


class Manifest(BaseModel):
    """What a restore checks the restored database against.

    `tables` and `audit_chains` were read in the very snapshot pg_dump dumped, so a
    restore of this dump must reproduce them exactly.
    """

    model_config = ConfigDict(frozen=True)

    manifest_version: Literal[1] = MANIFEST_VERSION
    key: str
    scheduled_for: datetime
    started_at: datetime
    finished_at: datetime
    size_bytes: int
    sha256: str
    server_version: str
    server_version_num: int
    pg_dump_version: str
    tables: dict[str, int]
    audit_chains: dict[str, ChainHead]


def dump_key(prefix: str, scheduled_for: datetime) -> str:
    """`<prefix>/<yyyy>/<mm>/<dd>/<hhmm>Z.dump` for a scheduled time (any timezone)."""
    moment = scheduled_for.astimezone(UTC)
    name = moment.strftime("%Y/%m/%d/%H%MZ") + DUMP_SUFFIX
    return f"{prefix}/{name}" if prefix else name


def manifest_key(dump: str) -> str:
    """The manifest's key (or path) beside a dump's: `…Z.dump` → `…Z.manifest.json`."""
    if not dump.endswith(DUMP_SUFFIX):
        raise ValueError(f"not a backup dump (expected a name ending in {DUMP_SUFFIX}): {dump}")
    return dump.removesuffix(DUMP_SUFFIX) + MANIFEST_SUFFIX


def backup_time_of(prefix: str, key: str) -> datetime | None:
    """The scheduled time a backup object's key encodes, or None for any other key.

    Only exact `<prefix>/yyyy/mm/dd/hhmmZ.dump|.manifest.json` keys match, so retention can
    never touch an object it did not write.
    """
    base = re.escape(f"{prefix}/") if prefix else ""
    suffixes = "|".join(re.escape(suffix) for suffix in (DUMP_SUFFIX, MANIFEST_SUFFIX))
    match = re.fullmatch(
        rf"{base}(\d{{4}})/(\d{{2}})/(\d{{2}})/(\d{{2}})(\d{{2}})Z(?:{suffixes})", key
    )
    if match is None:
        return None
    year, month, day, hour, minute = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:  # 2026/02/30 and the like: not a key we wrote
        return None
