"""The bridge: runs of kind 'bridge' in the run log, the id map between portals, and the dedupe window.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # One run log for robots and the bridge: a bridge run names its route and trigger; only a run triggered by the
    # bridge robot has a workflow (and an event token) to answer.
    op.execute("ALTER TABLE runs ADD COLUMN kind text NOT NULL DEFAULT 'robot' CHECK (kind IN ('robot', 'bridge'))")
    op.execute("ALTER TABLE runs ADD COLUMN route text")
    op.execute("ALTER TABLE runs ADD COLUMN trigger text")
    op.execute("ALTER TABLE runs ALTER COLUMN robot_code DROP NOT NULL")
    op.execute("ALTER TABLE runs ALTER COLUMN workflow_id DROP NOT NULL")
    op.execute("ALTER TABLE runs ALTER COLUMN event_token DROP NOT NULL")
    op.execute("CREATE INDEX runs_route_created ON runs (route, created_at DESC) WHERE route IS NOT NULL")
    # The id map: which target record stands for which source record (per pair of portals), and what was last
    # delivered to it, so an update sends only changed fields and a replay finds the record instead of adding one.
    op.execute(
        """
        CREATE TABLE bridge_links (
            source_key      text NOT NULL,
            target_key      text NOT NULL,
            entity          text NOT NULL CHECK (entity IN ('DEAL', 'CONTACT', 'COMPANY')),
            source_id       bigint NOT NULL,
            target_id       bigint NOT NULL,
            route           text NOT NULL,
            delivered       jsonb NOT NULL DEFAULT '{}'::jsonb,
            source_modified text,
            returned        jsonb NOT NULL DEFAULT '{}'::jsonb,
            target_modified text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source_key, target_key, entity, source_id)
        )
        """
    )
    op.execute("CREATE INDEX bridge_links_target ON bridge_links (target_key, entity, target_id)")
    # Accepted triggers by canonical key within a window: the same trigger again is a no-op (PostgreSQL is the
    # truth; Redis SET NX is a fast path in front of it when configured).
    op.execute(
        """
        CREATE TABLE bridge_dedupe (
            key        text PRIMARY KEY,
            run_id     bigint NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE bridge_dedupe")
    op.execute("DROP TABLE bridge_links")
    op.execute("DROP INDEX runs_route_created")
    op.execute("DELETE FROM runs WHERE kind = 'bridge'")
    op.execute("ALTER TABLE runs ALTER COLUMN event_token SET NOT NULL")
    op.execute("ALTER TABLE runs ALTER COLUMN workflow_id SET NOT NULL")
    op.execute("ALTER TABLE runs ALTER COLUMN robot_code SET NOT NULL")
    op.execute("ALTER TABLE runs DROP COLUMN trigger")
    op.execute("ALTER TABLE runs DROP COLUMN route")
    op.execute("ALTER TABLE runs DROP COLUMN kind")
