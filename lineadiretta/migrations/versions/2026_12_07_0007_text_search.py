"""search by words in a case's text and address without reading every case: trigram indexes
(pg_trgm, GIN) on PostgreSQL; SQLite, the embedded default, keeps scanning

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {"ix_cases_text_trgm": "original_text", "ix_cases_address_trgm": "address"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # a trusted extension since PostgreSQL 13: the database's owner may create it
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON cases USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
