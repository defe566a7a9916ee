"""runs.status 'dead': a run given up after its whole retry schedule, kept visible with its reason.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE runs DROP CONSTRAINT runs_status_check")
    op.execute(
        "ALTER TABLE runs ADD CONSTRAINT runs_status_check"
        " CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'uncertain', 'dead'))"
    )
    # What an operator asks first: which runs are dead (and, with the listing, which are stuck).
    op.execute("CREATE INDEX runs_dead ON runs (created_at DESC) WHERE status = 'dead'")


def downgrade() -> None:
    op.execute("DROP INDEX runs_dead")
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'dead'")
    op.execute("ALTER TABLE runs DROP CONSTRAINT runs_status_check")
    op.execute(
        "ALTER TABLE runs ADD CONSTRAINT runs_status_check"
        " CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'uncertain'))"
    )
