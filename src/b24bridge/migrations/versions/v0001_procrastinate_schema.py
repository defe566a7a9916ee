"""Procrastinate job queue schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op
from procrastinate.schema import SchemaManager

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _execute_raw(statement: str) -> None:
    # The schema holds plpgsql ``RAISE '... %'`` placeholders and many statements; no_parameters
    # makes SQLAlchemy call cursor.execute(sql) without arguments, so psycopg neither interprets
    # ``%`` nor switches to the extended protocol (which would reject multiple statements).
    op.get_bind().exec_driver_sql(statement, execution_options={"no_parameters": True})


def upgrade() -> None:
    _execute_raw(SchemaManager.get_schema())


def downgrade() -> None:
    # procrastinate names every object it creates procrastinate_*; drop them all, whatever the version.
    _execute_raw(
        """
        DO $$
        DECLARE obj record;
        BEGIN
            FOR obj IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = current_schema() AND c.relkind = 'r'
                         AND c.relname LIKE 'procrastinate\\_%'
            LOOP
                EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', obj.relname);
            END LOOP;
            FOR obj IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                       JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
            LOOP
                EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', obj.sig);
            END LOOP;
            FOR obj IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                       WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%'
                         AND t.typtype IN ('e', 'c')
            LOOP
                EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', obj.typname);
            END LOOP;
        END
        $$;
        """
    )
