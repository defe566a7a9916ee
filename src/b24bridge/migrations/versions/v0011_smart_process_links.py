"""Smart-process items in the id map: a route's source record may be an item of a smart process
(``bridge_links.entity`` ``DYNAMIC_<entityTypeId>`` beside DEAL, LEAD, CONTACT and COMPANY).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE bridge_links DROP CONSTRAINT bridge_links_entity_check")
    op.execute(
        "ALTER TABLE bridge_links ADD CONSTRAINT bridge_links_entity_check "
        "CHECK (entity IN ('DEAL', 'LEAD', 'CONTACT', 'COMPANY') OR entity ~ '^DYNAMIC_[0-9]{3,9}$')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM bridge_links WHERE entity LIKE 'DYNAMIC%'")
    op.execute("ALTER TABLE bridge_links DROP CONSTRAINT bridge_links_entity_check")
    op.execute(
        "ALTER TABLE bridge_links ADD CONSTRAINT bridge_links_entity_check "
        "CHECK (entity IN ('DEAL', 'LEAD', 'CONTACT', 'COMPANY'))"
    )
