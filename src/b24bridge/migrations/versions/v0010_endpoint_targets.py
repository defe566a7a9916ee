"""Your own systems in the id map: a record handed to an HTTPS endpoint is mapped to the id that endpoint answered
with (``bridge_links.target_ref``, text: an ERP's order number is rarely a number), its ``target_id`` -1 (no portal
record); 0 stays the placeholder of a creation in progress.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE bridge_links ADD COLUMN target_ref text")


def downgrade() -> None:
    op.execute("DELETE FROM bridge_links WHERE target_id = -1")
    op.execute("ALTER TABLE bridge_links DROP COLUMN target_ref")
