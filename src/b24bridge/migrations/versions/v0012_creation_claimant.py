"""Who claimed a creation: the placeholder of a contact or company being created (``bridge_links.target_id`` 0)
names the run creating it and its attempt (``claimed_by``, ``claimed_attempt``), so a claim whose attempt is over
(a killed worker's, an interrupted one's; its run ended or tried again) is taken over at once. Without them such a
claim held every delivery needing that contact, its own run's next attempt too, for a minute.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE bridge_links ADD COLUMN claimed_by bigint, ADD COLUMN claimed_attempt integer")


def downgrade() -> None:
    op.execute("ALTER TABLE bridge_links DROP COLUMN claimed_by, DROP COLUMN claimed_attempt")
