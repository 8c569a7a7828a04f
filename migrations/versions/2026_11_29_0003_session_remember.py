"""session remember flag: rememberMe=false sessions last a day and are never extended

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:20:28.318506
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "session", sa.Column("remember", sa.Boolean(), server_default="true", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("session", "remember")
