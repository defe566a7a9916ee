"""runs (every robot call and its outcome), run_calls (each outbound call of a run), robot_registrations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE runs (
            id            bigserial PRIMARY KEY,
            member_id     text NOT NULL,
            robot_code    text NOT NULL,
            workflow_id   text NOT NULL,
            event_token   text NOT NULL,
            document_id   jsonb NOT NULL DEFAULT '[]'::jsonb,
            inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
            status        text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'uncertain')),
            outcome       jsonb,
            error         text,
            attempts      integer NOT NULL DEFAULT 0,
            answered_at   timestamptz,
            deadline_at   timestamptz,
            created_at    timestamptz NOT NULL DEFAULT now(),
            started_at    timestamptz,
            finished_at   timestamptz
        )
        """
    )
    # The portal's queue server may deliver a robot call more than once; this is what makes it a no-op.
    op.execute("CREATE UNIQUE INDEX runs_dedupe ON runs (member_id, workflow_id, event_token)")
    op.execute("CREATE INDEX runs_member_created ON runs (member_id, created_at DESC)")
    op.execute("CREATE INDEX runs_status_created ON runs (status, created_at DESC)")
    op.execute(
        """
        CREATE TABLE run_calls (
            id        bigserial PRIMARY KEY,
            run_id    bigint NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            method    text NOT NULL,
            status    text NOT NULL CHECK (status IN ('ok', 'error', 'uncertain')),
            duration  real NOT NULL,
            error     text,
            at        timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX run_calls_run ON run_calls (run_id, id)")
    # What we registered in each portal, so a sync updates a robot only when its definition changed.
    op.execute(
        """
        CREATE TABLE robot_registrations (
            member_id      text NOT NULL,
            code           text NOT NULL,
            definition_hash text NOT NULL,
            registered_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (member_id, code)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE robot_registrations")
    op.execute("DROP TABLE run_calls")
    op.execute("DROP TABLE runs")
