"""Column helpers shared by every table; the one metadata alembic compares against."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import DateTime, MetaData, Table, func, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from shared.ids import id_factory

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata

ROLES = ("owner", "admin", "developer", "ciso", "auditor")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (SQLModel rejects naive datetimes)."""
    return datetime.now(UTC)


def id_field(kind: str) -> Any:
    """The TEXT primary key `<prefix>_<nanoid>`, made in Python."""
    return Field(default_factory=id_factory(kind), primary_key=True, max_length=64)


def created_at_field() -> Any:
    return Field(
        default_factory=utcnow,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "nullable": False},
    )


def timestamp_field(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"nullable": nullable},
        index=index,
    )


def jsonb_field(
    *, default_factory: Any = dict, nullable: bool = False, name: str | None = None
) -> Any:
    """A JSONB column; `name` sets the SQL name when the attribute cannot have it."""
    kwargs: dict[str, Any] = {"nullable": nullable}
    if not nullable:
        kwargs["server_default"] = "{}" if default_factory is dict else "[]"
    if name is not None:
        kwargs["name"] = name
    if nullable:
        return Field(default=None, sa_type=JSONB, sa_column_kwargs=kwargs)
    return Field(default_factory=default_factory, sa_type=JSONB, sa_column_kwargs=kwargs)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a model (for INSERT … ON CONFLICT and other Core statements)."""
    return cast(Table, inspect(model).local_table)


def fk_field(
    target: str,
    *,
    ondelete: Literal["CASCADE", "SET NULL", "RESTRICT"],
    nullable: bool = False,
    index: bool = True,
) -> Any:
    """A foreign key column; every FK is indexed unless a composite index covers it."""
    default: Any = None if nullable else ...
    return Field(
        default,
        foreign_key=target,
        ondelete=ondelete,
        nullable=nullable,
        index=index,
        max_length=64,
    )


def in_check(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that `column` holds one of `values` (text columns, not PG enums)."""
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"
