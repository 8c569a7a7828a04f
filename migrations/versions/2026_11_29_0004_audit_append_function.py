"""audit append function: one statement appends an event to its chain

The application computes the event's canonical JSON around a placeholder for `seq` (the only
value it cannot know) and the database fills it in: under the chain head's row lock it takes
the next `seq` and the previous hash, computes `hash = SHA-256(prev_hash || prefix || seq ||
suffix)`, inserts the event and advances the head. One round trip per event, and the hash a
verifier recomputes from the stored row is the same bytes by construction.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 12:51:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION igris_append_event(
            p_chain_id text, p_prefix text, p_suffix text, p_row jsonb,
            OUT seq bigint, OUT prev_hash text, OUT hash text
        )
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO audit_chain_heads AS head (chain_id, seq, hash)
            VALUES (p_chain_id, 1, '{GENESIS}')
            ON CONFLICT (chain_id) DO UPDATE SET seq = head.seq + 1
            RETURNING head.seq, head.hash INTO seq, prev_hash;
            hash := encode(
                sha256(convert_to(prev_hash || p_prefix || seq::text || p_suffix, 'UTF8')),
                'hex'
            );
            INSERT INTO audit_events
            SELECT * FROM jsonb_populate_record(
                NULL::audit_events,
                p_row || jsonb_build_object(
                    'chain_id', p_chain_id, 'seq', seq, 'prev_hash', prev_hash, 'hash', hash,
                    'recorded_at', now()
                )
            );
            UPDATE audit_chain_heads SET hash = igris_append_event.hash
            WHERE chain_id = p_chain_id;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION igris_append_event(text, text, text, jsonb)")
