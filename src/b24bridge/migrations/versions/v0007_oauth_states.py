"""oauth_states: OAuth ``state`` values already used at the callback, so each is good for one installation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A row lives until its state would have expired anyway; the callback deletes expired rows as it goes.
    op.execute(
        """
        CREATE TABLE oauth_states (
            nonce       text PRIMARY KEY,
            expires_at  timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX oauth_states_expiry ON oauth_states (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE oauth_states")
