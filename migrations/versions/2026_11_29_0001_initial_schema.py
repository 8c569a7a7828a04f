"""initial schema: every table, the application role and its grants, append-only audit

Revision ID: 0001
Revises:
Create Date: 2026-11-29 12:01:45.291090
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The role the application connects as (through the pooler). It may read and write the
# domain tables but only INSERT and SELECT audit_events. The migrate function grants it to
# the pooled URL's login role; roles are cluster-wide, so downgrade keeps the role itself.
APP_ROLE = "igris_app"


def _create_app_role_and_grants() -> None:
    op.execute(
        f"""
        DO $$ BEGIN
            CREATE ROLE {APP_ROLE} NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {APP_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM {APP_ROLE}")
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}"
    )


def _drop_app_grants() -> None:
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {APP_ROLE}"
    )
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")


def _make_audit_append_only() -> None:
    """Refuse UPDATE, DELETE and TRUNCATE on audit_events for every role, owner included."""
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def upgrade() -> None:
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_chain_heads")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=128), nullable=True),
        sa.Column("tool_name", sa.String(length=255), nullable=True),
        sa.Column("server_id", sa.String(length=64), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("user_ref", sa.String(length=255), nullable=True),
        sa.Column("trace_id", sa.String(length=128), nullable=True),
        sa.Column("policy_id", sa.String(length=64), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("rule_index", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "action IN ('allow', 'deny', 'alert', 'redact', 'require_approval', 'log')",
            name=op.f("ck_audit_events_action"),
        ),
        sa.CheckConstraint(
            "actor_type IN ('user', 'api_key', 'system', 'anonymous')",
            name=op.f("ck_audit_events_actor_type"),
        ),
        sa.CheckConstraint(
            "source IN ('proxy', 'api', 'portkey', 'helicone', 'cloudflare', 'raw', 'system')",
            name=op.f("ck_audit_events_source"),
        ),
        sa.CheckConstraint(
            "type IN ('tool_call', 'anomaly', 'session_update', 'admin', 'auth', 'completion', 'embedding', 'custom')",
            name=op.f("ck_audit_events_type"),
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_events_seq_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("chain_id", "seq", name=op.f("uq_audit_events_chain_id_seq")),
    )
    op.create_index(
        "ix_audit_events_anomaly_cooldown",
        "audit_events",
        ["organization_id", "server_id", "type", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_organization_id_session_id",
        "audit_events",
        ["organization_id", "session_id"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_organization_id_trace_id",
        "audit_events",
        ["organization_id", "trace_id"],
        unique=False,
    )
    op.create_index(
        "uq_audit_events_external_id",
        "audit_events",
        ["organization_id", "source", "external_id"],
        unique=True,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.create_table(
        "backups",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("s3_key", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column(
            "manifest", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')", name=op.f("ck_backups_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
        sa.UniqueConstraint("scheduled_for", name=op.f("uq_backups_scheduled_for")),
    )
    op.create_table(
        "organization",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("logo", sa.String(length=2048), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9][a-z0-9_-]{1,63}$'", name=op.f("ck_organization_slug_format")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("slug", name=op.f("uq_organization_slug")),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "snapshot", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint(
            "policy_id", "version", name=op.f("uq_policy_versions_policy_id_version")
        ),
    )
    op.create_index(
        op.f("ix_policy_versions_organization_id"),
        "policy_versions",
        ["organization_id"],
        unique=False,
    )
    op.create_table(
        "user",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("image", sa.String(length=2048), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
    )
    op.create_index("uq_user_email_lower", "user", [sa.literal_column("lower(email)")], unique=True)
    op.create_table(
        "verification",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification")),
        sa.UniqueConstraint("identifier", name=op.f("uq_verification_identifier")),
    )
    op.create_index(
        op.f("ix_verification_expires_at"), "verification", ["expires_at"], unique=False
    )
    op.create_table(
        "account",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("scope", sa.String(length=1024), nullable=True),
        sa.Column("access_token_encrypted", sa.String(), nullable=True),
        sa.Column("refresh_token_encrypted", sa.String(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_account_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint(
            "provider_id", "account_id", name=op.f("uq_account_provider_id_account_id")
        ),
    )
    op.create_index(op.f("ix_account_user_id"), "account", ["user_id"], unique=False)
    op.create_table(
        "ai_systems",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("trade_name", sa.String(length=300), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("intended_purpose", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("annex_iii_area", sa.String(length=64), nullable=True),
        sa.Column("prohibited_practice", sa.String(length=1), nullable=True),
        sa.Column("gpai", sa.Boolean(), nullable=False),
        sa.Column("interacts_with_persons", sa.Boolean(), nullable=False),
        sa.Column("generates_synthetic_content", sa.Boolean(), nullable=False),
        sa.Column("article6_exemption", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("risk_tier", sa.String(length=16), nullable=False),
        sa.Column(
            "obligations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("registration_status", sa.String(length=16), nullable=False),
        sa.Column("eu_database_id", sa.String(length=128), nullable=True),
        sa.Column(
            "member_states", postgresql.ARRAY(sa.TEXT()), server_default="{}", nullable=False
        ),
        sa.Column("market_status", sa.String(length=32), nullable=False),
        sa.Column("human_oversight", sa.String(), nullable=True),
        sa.Column("server_ids", postgresql.ARRAY(sa.TEXT()), server_default="{}", nullable=False),
        sa.Column(
            "provider", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "authorised_representative", postgresql.JSONB(astext_type=sa.Text()), nullable=True
        ),
        sa.Column("notified_body", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "market_status IN ('on_market', 'no_longer_on_market', 'recalled')",
            name=op.f("ck_ai_systems_market_status"),
        ),
        sa.CheckConstraint(
            "registration_status IN ('not_required', 'required', 'registered')",
            name=op.f("ck_ai_systems_registration_status"),
        ),
        sa.CheckConstraint(
            "risk_tier IN ('prohibited', 'high', 'limited', 'minimal')",
            name=op.f("ck_ai_systems_risk_tier"),
        ),
        sa.CheckConstraint(
            "role IN ('provider', 'deployer', 'importer', 'distributor')",
            name=op.f("ck_ai_systems_role"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_ai_systems_organization_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_systems")),
    )
    op.create_index(
        "ix_ai_systems_organization_id_risk_tier",
        "ai_systems",
        ["organization_id", "risk_tier"],
        unique=False,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("start", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'developer', 'ciso', 'auditor')",
            name=op.f("ck_api_keys_role"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["user.id"],
            name=op.f("fk_api_keys_created_by_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_api_keys_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_created_by"), "api_keys", ["created_by"], unique=False)
    op.create_index(
        op.f("ix_api_keys_organization_id"), "api_keys", ["organization_id"], unique=False
    )
    op.create_table(
        "baa",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("covered_entity", sa.String(length=500), nullable=False),
        sa.Column("business_associate", sa.String(length=500), nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("permitted_uses", sa.String(), nullable=False),
        sa.Column(
            "safeguards",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("server_ids", postgresql.ARRAY(sa.TEXT()), server_default="{}", nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "signatures",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'pending_signature', 'partially_signed', 'fully_executed', 'expired', 'terminated')",
            name=op.f("ck_baa_status"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_baa_organization_id_organization"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baa")),
    )
    op.create_index(
        "ix_baa_organization_id_status", "baa", ["organization_id", "status"], unique=False
    )
    op.create_table(
        "invitation",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("inviter_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'developer', 'ciso', 'auditor')",
            name=op.f("ck_invitation_role"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected', 'canceled')",
            name=op.f("ck_invitation_status"),
        ),
        sa.ForeignKeyConstraint(
            ["inviter_id"],
            ["user.id"],
            name=op.f("fk_invitation_inviter_id_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_invitation_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitation")),
    )
    op.create_index(op.f("ix_invitation_email"), "invitation", ["email"], unique=False)
    op.create_index(op.f("ix_invitation_inviter_id"), "invitation", ["inviter_id"], unique=False)
    op.create_index(
        "ix_invitation_organization_id_status",
        "invitation",
        ["organization_id", "status"],
        unique=False,
    )
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("auth_type", sa.String(length=16), nullable=False),
        sa.Column("auth_header_name", sa.String(length=128), nullable=True),
        sa.Column("credential_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("credential_key_id", sa.String(length=64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("data_classes", postgresql.ARRAY(sa.TEXT()), server_default="{}", nullable=False),
        sa.Column("anomaly_multiplier", sa.Float(), nullable=False),
        sa.Column("log_arguments", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "auth_type IN ('none', 'bearer', 'header')", name=op.f("ck_mcp_servers_auth_type")
        ),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9][a-z0-9_-]{2,63}$'", name=op.f("ck_mcp_servers_slug_format")
        ),
        sa.CheckConstraint(
            "anomaly_multiplier > 0", name=op.f("ck_mcp_servers_anomaly_multiplier_positive")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["user.id"],
            name=op.f("fk_mcp_servers_created_by_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_mcp_servers_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        sa.UniqueConstraint(
            "organization_id", "slug", name=op.f("uq_mcp_servers_organization_id_slug")
        ),
    )
    op.create_index(op.f("ix_mcp_servers_created_by"), "mcp_servers", ["created_by"], unique=False)
    op.create_table(
        "member",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'developer', 'ciso', 'auditor')",
            name=op.f("ck_member_role"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_member_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_member_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member")),
        sa.UniqueConstraint(
            "organization_id", "user_id", name=op.f("uq_member_organization_id_user_id")
        ),
    )
    op.create_index(op.f("ix_member_user_id"), "member", ["user_id"], unique=False)
    op.create_table(
        "session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("active_organization_id", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("absolute_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["active_organization_id"],
            ["organization.id"],
            name=op.f("fk_session_active_organization_id_organization"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_session_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_session_token_hash")),
    )
    op.create_index(
        op.f("ix_session_active_organization_id"),
        "session",
        ["active_organization_id"],
        unique=False,
    )
    op.create_index(op.f("ix_session_expires_at"), "session", ["expires_at"], unique=False)
    op.create_index(op.f("ix_session_user_id"), "session", ["user_id"], unique=False)
    op.create_table(
        "agent_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("principal_type", sa.String(length=16), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tool_calls_count", sa.Integer(), nullable=False),
        sa.Column("mcp_session_id", sa.String(length=255), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_activity_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_reason", sa.String(length=1000), nullable=True),
        sa.Column("suspended_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "principal_type IN ('api_key', 'user')", name=op.f("ck_agent_sessions_principal_type")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'completed')", name=op.f("ck_agent_sessions_status")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_agent_sessions_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_agent_sessions_server_id_mcp_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_sessions")),
    )
    op.create_index(
        "ix_agent_sessions_organization_id_status",
        "agent_sessions",
        ["organization_id", "status"],
        unique=False,
    )
    op.create_index(
        op.f("ix_agent_sessions_server_id"), "agent_sessions", ["server_id"], unique=False
    )
    op.create_index(
        "uq_agent_sessions_open_principal",
        "agent_sessions",
        ["organization_id", "server_id", "principal_type", "principal_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('active', 'suspended')"),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "rules", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_policies_version_positive")),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["user.id"],
            name=op.f("fk_policies_created_by_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_policies_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_policies_server_id_mcp_servers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint(
            "organization_id", "name", name=op.f("uq_policies_organization_id_name")
        ),
    )
    op.create_index(op.f("ix_policies_created_by"), "policies", ["created_by"], unique=False)
    op.create_index(
        "ix_policies_organization_id_server_id_priority",
        "policies",
        ["organization_id", "server_id", "priority"],
        unique=False,
    )
    op.create_index(op.f("ix_policies_server_id"), "policies", ["server_id"], unique=False)
    op.create_table(
        "server_tools",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column(
            "input_schema",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_fingerprint", sa.String(length=64), nullable=False),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_server_tools_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_server_tools_server_id_mcp_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_tools")),
        sa.UniqueConstraint("server_id", "name", name=op.f("uq_server_tools_server_id_name")),
    )
    op.create_index(
        op.f("ix_server_tools_organization_id"), "server_tools", ["organization_id"], unique=False
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("agent_session_id", sa.String(length=64), nullable=True),
        sa.Column("tool_name", sa.String(length=255), nullable=False),
        sa.Column("arguments_digest", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("principal_type", sa.String(length=16), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=False),
        sa.Column("requester_user_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.String(length=1000), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'used')",
            name=op.f("ck_approvals_status"),
        ),
        sa.ForeignKeyConstraint(
            ["agent_session_id"],
            ["agent_sessions.id"],
            name=op.f("fk_approvals_agent_session_id_agent_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_approvals_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_approvals_server_id_mcp_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(
        op.f("ix_approvals_agent_session_id"), "approvals", ["agent_session_id"], unique=False
    )
    op.create_index(
        "ix_approvals_call",
        "approvals",
        ["server_id", "principal_type", "principal_id", "tool_name", "arguments_digest"],
        unique=False,
    )
    op.create_index(
        "ix_approvals_organization_id_status",
        "approvals",
        ["organization_id", "status"],
        unique=False,
    )
    _create_app_role_and_grants()
    _make_audit_append_only()


def downgrade() -> None:
    _drop_app_grants()
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_index("ix_approvals_organization_id_status", table_name="approvals")
    op.drop_index("ix_approvals_call", table_name="approvals")
    op.drop_index(op.f("ix_approvals_agent_session_id"), table_name="approvals")
    op.drop_table("approvals")
    op.drop_index(op.f("ix_server_tools_organization_id"), table_name="server_tools")
    op.drop_table("server_tools")
    op.drop_index(op.f("ix_policies_server_id"), table_name="policies")
    op.drop_index("ix_policies_organization_id_server_id_priority", table_name="policies")
    op.drop_index(op.f("ix_policies_created_by"), table_name="policies")
    op.drop_table("policies")
    op.drop_index(
        "uq_agent_sessions_open_principal",
        table_name="agent_sessions",
        postgresql_where=sa.text("status IN ('active', 'suspended')"),
    )
    op.drop_index(op.f("ix_agent_sessions_server_id"), table_name="agent_sessions")
    op.drop_index("ix_agent_sessions_organization_id_status", table_name="agent_sessions")
    op.drop_table("agent_sessions")
    op.drop_index(op.f("ix_session_user_id"), table_name="session")
    op.drop_index(op.f("ix_session_expires_at"), table_name="session")
    op.drop_index(op.f("ix_session_active_organization_id"), table_name="session")
    op.drop_table("session")
    op.drop_index(op.f("ix_member_user_id"), table_name="member")
    op.drop_table("member")
    op.drop_index(op.f("ix_mcp_servers_created_by"), table_name="mcp_servers")
    op.drop_table("mcp_servers")
    op.drop_index("ix_invitation_organization_id_status", table_name="invitation")
    op.drop_index(op.f("ix_invitation_inviter_id"), table_name="invitation")
    op.drop_index(op.f("ix_invitation_email"), table_name="invitation")
    op.drop_table("invitation")
    op.drop_index("ix_baa_organization_id_status", table_name="baa")
    op.drop_table("baa")
    op.drop_index(op.f("ix_api_keys_organization_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_created_by"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_ai_systems_organization_id_risk_tier", table_name="ai_systems")
    op.drop_table("ai_systems")
    op.drop_index(op.f("ix_account_user_id"), table_name="account")
    op.drop_table("account")
    op.drop_index(op.f("ix_verification_expires_at"), table_name="verification")
    op.drop_table("verification")
    op.drop_index("uq_user_email_lower", table_name="user")
    op.drop_table("user")
    op.drop_index(op.f("ix_policy_versions_organization_id"), table_name="policy_versions")
    op.drop_table("policy_versions")
    op.drop_table("organization")
    op.drop_table("backups")
    op.drop_index(
        "uq_audit_events_external_id",
        table_name="audit_events",
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.drop_index("ix_audit_events_organization_id_trace_id", table_name="audit_events")
    op.drop_index("ix_audit_events_organization_id_session_id", table_name="audit_events")
    op.drop_index("ix_audit_events_anomaly_cooldown", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("audit_chain_heads")
