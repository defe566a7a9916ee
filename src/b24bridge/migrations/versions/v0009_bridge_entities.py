"""Leads in the id map: a route's source record may be a lead (``bridge_links.entity`` LEAD beside DEAL, CONTACT and
COMPANY), so its map row, its ORIGIN_ID lookups and its status back work as a deal's do.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE bridge_links DROP CONSTRAINT bridge_links_entity_check")
    op.execute(
        "ALTER TABLE bridge_links ADD CONSTRAINT bridge_links_entity_check "
        "CHECK (entity IN ('DEAL', 'LEAD', 'CONTACT', 'COMPANY'))"
    )


def downgrade() -> None:
    op.execute("DELETE FROM bridge_links WHERE entity = 'LEAD'")
    op.execute("ALTER TABLE bridge_links DROP CONSTRAINT bridge_links_entity_check")
    op.execute(
        "ALTER TABLE bridge_links ADD CONSTRAINT bridge_links_entity_check "
        "CHECK (entity IN ('DEAL', 'CONTACT', 'COMPANY'))"
    )
