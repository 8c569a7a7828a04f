"""proxy decide function: a warm tools/call decided and recorded in one statement

The proxy evaluates policies against state it keeps in the function instance (principal,
server, policies, agent session) and sends one call of `igris_proxy_decide`. The function
checks that the cached state is still current (API key or session valid, server enabled
and unchanged, the same policy versions, the agent session active and not idle) and answers
`{"stale": ...}` when it is not, so the proxy re-reads and decides again. Otherwise it
applies the rate limit and the PHI gate, appends the matching prepared decision event,
updates the agent session and the per-minute counters, and appends the anomalies whose
conditions and cooldowns hold. Revocation, the kill switch and policy changes therefore
take effect on the very next call on every instance.

The payload's events are prepared by the application (shared.audit.prepare_event): the
database only fills in seq and the hash (igris_append_event). A retried call with the same
event ids answers the recorded outcome instead of deciding twice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 13:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION igris_append_prepared(e jsonb) RETURNS void
        LANGUAGE sql AS $$
            SELECT FROM igris_append_event(e->>'chain', e->>'prefix', e->>'suffix', e->'row')
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION igris_anomaly(p jsonb, kind text) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT (p->'anomalies' ? kind) THEN
                RETURN;
            END IF;
            PERFORM pg_advisory_xact_lock(hashtextextended(
                'anomaly:' || (p->>'org') || ':' || (p->>'server_id') || ':' || kind, 0));
            PERFORM 1 FROM audit_events
            WHERE organization_id = p->>'org' AND server_id = p->>'server_id'
              AND type = 'anomaly' AND occurred_at > now() - interval '5 minutes'
              AND metadata->>'anomalyType' = kind
            LIMIT 1;
            IF NOT FOUND THEN
                PERFORM igris_append_prepared(p->'anomalies'->kind);
            END IF;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION igris_proxy_decide(p jsonb) RETURNS jsonb
        LANGUAGE plpgsql AS $$
        DECLARE
            v_org text := p->>'org';
            v_server text := p->>'server_id';
            v_status text;
            v_last timestamptz;
            v_fingerprint text;
            v_count integer;
            v_calls integer;
            v_history bigint;
            v_refusals integer;
            v_outcome text := p->>'plan';
            v_event text;
            c jsonb := p->'counters';
            r jsonb := p->'rate_limit';
        BEGIN
            -- A retry of a call already decided answers what was recorded.
            SELECT key INTO v_event FROM jsonb_each(p->'events') AS e(key, value)
            WHERE EXISTS (SELECT 1 FROM audit_events WHERE id = value->'row'->>'id');
            IF v_event IS NOT NULL THEN
                RETURN jsonb_build_object('outcome', v_event, 'replayed', true);
            END IF;

            IF p->'principal'->>'kind' = 'api_key' THEN
                PERFORM 1 FROM api_keys k
                JOIN member m ON m.organization_id = k.organization_id AND m.user_id = k.created_by
                WHERE k.id = p->'principal'->>'api_key_id' AND k.organization_id = v_org
                  AND k.role = p->'principal'->>'role' AND k.revoked_at IS NULL
                  AND (k.expires_at IS NULL OR k.expires_at > now());
            ELSE
                PERFORM 1 FROM session s
                JOIN member m ON m.organization_id = s.active_organization_id
                             AND m.user_id = s.user_id
                WHERE s.id = p->'principal'->>'session_id' AND s.expires_at > now()
                  AND s.active_organization_id = v_org AND m.role = p->'principal'->>'role';
            END IF;
            IF NOT FOUND THEN
                RETURN '{"stale": "principal"}';
            END IF;
            -- What resolving the principal does on the slow path: a key's coarse lastUsedAt,
            -- a session's sliding expiry (at most one write a minute / a day).
            IF p->'principal'->>'kind' = 'api_key' THEN
                UPDATE api_keys SET last_used_at = now()
                WHERE id = p->'principal'->>'api_key_id'
                  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
            ELSE
                UPDATE session
                SET expires_at = LEAST(now() + interval '7 days', absolute_expires_at),
                    updated_at = now()
                WHERE id = p->'principal'->>'session_id' AND remember
                  AND updated_at < now() - interval '1 day';
            END IF;

            PERFORM 1 FROM mcp_servers
            WHERE id = v_server AND organization_id = v_org AND enabled
              AND updated_at = (p->>'server_version')::timestamptz;
            IF NOT FOUND THEN
                RETURN '{"stale": "server"}';
            END IF;

            SELECT coalesce(string_agg(id || ':' || version, ',' ORDER BY id COLLATE "C"), '')
            INTO v_fingerprint FROM policies
            WHERE organization_id = v_org AND active
              AND (server_id = v_server OR server_id IS NULL);
            IF v_fingerprint <> p->>'policies' THEN
                RETURN '{"stale": "policies"}';
            END IF;

            SELECT coalesce(string_agg(id, ',' ORDER BY id COLLATE "C"), '')
            INTO v_fingerprint FROM ai_systems
            WHERE organization_id = v_org AND retired_at IS NULL AND v_server = ANY(server_ids);
            IF v_fingerprint <> p->>'ai_systems' THEN
                RETURN '{"stale": "ai_systems"}';
            END IF;

            SELECT status, last_activity_at INTO v_status, v_last
            FROM agent_sessions WHERE id = p->>'agent_session_id' AND organization_id = v_org
            FOR UPDATE;
            IF v_status IS DISTINCT FROM 'active' OR v_last <= now() - interval '30 minutes' THEN
                RETURN '{"stale": "session"}';
            END IF;

            IF v_outcome = 'forward' AND r IS NOT NULL AND r <> 'null'::jsonb THEN
                INSERT INTO rate_limit_counters AS rl (id, bucket, window_start, count, expires_at)
                VALUES (r->>'id', r->>'bucket', (r->>'window_start')::timestamptz, 1,
                        (r->>'expires_at')::timestamptz)
                ON CONFLICT (bucket, window_start)
                DO UPDATE SET count = rl.count + 1 WHERE rl.count < (r->>'max')::integer
                RETURNING rl.count INTO v_count;
                IF v_count IS NULL THEN
                    v_outcome := 'rate_limited';
                END IF;
            END IF;

            IF v_outcome = 'forward' AND (p->>'phi')::boolean THEN
                PERFORM 1 FROM baa
                WHERE organization_id = v_org AND status = 'fully_executed'
                  AND (expires_at IS NULL OR expires_at > now()) AND v_server = ANY(server_ids);
                IF NOT FOUND THEN
                    v_outcome := 'no_baa';
                END IF;
            END IF;

            PERFORM igris_append_prepared(p->'events'->v_outcome);
            UPDATE agent_sessions
            SET last_activity_at = now(),
                tool_calls_count = tool_calls_count + (v_outcome = 'forward')::integer
            WHERE id = p->>'agent_session_id';

            INSERT INTO rate_limit_counters AS rl (id, bucket, window_start, count, expires_at)
            VALUES (c->>'server_id', c->>'server_bucket', (c->>'window_start')::timestamptz, 1,
                    (c->>'expires_at')::timestamptz)
            ON CONFLICT (bucket, window_start) DO UPDATE SET count = rl.count + 1
            RETURNING rl.count INTO v_calls;
            IF v_calls >= (c->>'spike_minimum')::integer THEN
                SELECT coalesce(sum(count), 0) INTO v_history FROM rate_limit_counters
                WHERE bucket = c->>'server_bucket'
                  AND window_start >= (c->>'history_since')::timestamptz
                  AND window_start < (c->>'window_start')::timestamptz;
                IF v_calls > v_history::numeric / (c->>'history_windows')::integer
                              * (c->>'multiplier')::numeric THEN
                    PERFORM igris_anomaly(p, 'rate_spike');
                END IF;
            END IF;

            IF v_outcome = 'forward' THEN
                PERFORM igris_anomaly(p, 'policy_alert');
                PERFORM igris_anomaly(p, 'destructive_pattern');
            ELSE
                INSERT INTO rate_limit_counters AS rl (id, bucket, window_start, count, expires_at)
                VALUES (c->>'refusal_id', c->>'refusal_bucket', (c->>'window_start')::timestamptz,
                        1, (c->>'expires_at')::timestamptz)
                ON CONFLICT (bucket, window_start) DO UPDATE SET count = rl.count + 1
                RETURNING rl.count INTO v_refusals;
                IF v_refusals >= (c->>'burst_minimum')::integer THEN
                    PERFORM igris_anomaly(p, 'denied_burst');
                END IF;
            END IF;

            RETURN jsonb_build_object('outcome', v_outcome);
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION igris_proxy_decide(jsonb)")
    op.execute("DROP FUNCTION igris_anomaly(jsonb, text)")
    op.execute("DROP FUNCTION igris_append_prepared(jsonb)")
