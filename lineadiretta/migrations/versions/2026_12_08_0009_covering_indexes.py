"""statistics and the overdue sweep at any size: the indexes they read carry the columns
they need (index-only scans over a year of a large city instead of its rows), and the open
cases past due that nobody has flagged yet have an index of their own

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN = "status IN ('received', 'assigned', 'in_progress', 'resolved')"


def upgrade() -> None:
    include = op.get_bind().dialect.name == "postgresql"  # SQLite has no INCLUDE
    cover = " INCLUDE (status, channel, category, office)" if include else ""
    answered = " INCLUDE (status, registered_at, due_at)" if include else ""
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_cases_muni_registered_cover"
        f" ON cases (municipality, registered_at){cover}"
    )
    op.execute("DROP INDEX IF EXISTS ix_cases_muni_registered")  # the same keys, covered now
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_cases_muni_closed_cover"
        f" ON cases (municipality, closed_at){answered} WHERE closed_at IS NOT NULL"
    )
    op.execute("DROP INDEX IF EXISTS ix_cases_muni_closed")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_cases_overdue_unflagged ON cases (municipality, due_at)"
        f" WHERE {OPEN} AND overdue_flagged_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cases_overdue_unflagged")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_cases_muni_closed ON cases (municipality, closed_at)"
        " WHERE closed_at IS NOT NULL"
    )
    op.execute("DROP INDEX IF EXISTS ix_cases_muni_closed_cover")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_cases_muni_registered ON cases (municipality, registered_at)"
    )
    op.execute("DROP INDEX IF EXISTS ix_cases_muni_registered_cover")
