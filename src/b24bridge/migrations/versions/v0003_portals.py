"""portals (installed Bitrix24 portals, tokens encrypted) and portal_events (their history).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain SQL: the check constraints and defaults read better than their SQLAlchemy spelling.
    op.execute(
        """
        CREATE TABLE portals (
            member_id              text PRIMARY KEY,
            domain                 text NOT NULL,
            client_endpoint        text NOT NULL,
            server_endpoint        text,
            scope                  text NOT NULL DEFAULT '',
            status                 text NOT NULL
                CHECK (status IN ('active', 'uninstalled', 'auth_lost')),
            burst                  integer NOT NULL DEFAULT 50,
            drain                  real NOT NULL DEFAULT 2.0,
            operating_limit        real NOT NULL DEFAULT 480.0,
            access_token_enc       text,
            refresh_token_enc      text,
            token_expires_at       timestamptz,
            application_token_hash text,
            app_version            integer,
            installed_at           timestamptz NOT NULL DEFAULT now(),
            updated_at             timestamptz NOT NULL DEFAULT now(),
            uninstalled_at         timestamptz
        )
        """
    )
    op.execute("CREATE INDEX portals_status ON portals (status)")
    # No foreign key to portals: the history outlives whatever happens to the portal row.
    op.execute(
        """
        CREATE TABLE portal_events (
            id        bigserial PRIMARY KEY,
            member_id text NOT NULL,
            kind      text NOT NULL CHECK (kind IN (
                'installed', 'reinstalled', 'uninstalled', 'auth_lost', 'tokens_refreshed', 'domain_changed'
            )),
            detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
            at        timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX portal_events_member ON portal_events (member_id, at)")


def downgrade() -> None:
    op.execute("DROP TABLE portal_events")
    op.execute("DROP TABLE portals")
