"""the work lists at any size: partial indexes over the open cases only (an office's queue,
an operator's cases and load, the overdue sweep) and the staff notifications by user in id
order (the console's poll), and the cases by closing time (the statistics), so each reads
what it shows, not the register's ten years

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OPEN = "status IN ('received', 'assigned', 'in_progress', 'resolved')"
ROUTED_OPEN = "status IN ('assigned', 'in_progress', 'resolved')"

# name -> (table, columns, predicate)
INDEXES = {
    "ix_cases_open_due": ("cases", "municipality, due_at, id", OPEN),
    "ix_cases_office_queue": ("cases", "municipality, office, due_at, id", ROUTED_OPEN),
    "ix_cases_assignee_open": ("cases", "assignee_id, due_at, id", OPEN),
    # the statistics' "answered in the range"
    "ix_cases_muni_closed": ("cases", "municipality, closed_at", "closed_at IS NOT NULL"),
    "ix_staff_notif_user_id": ("staff_notifications", "user_id, id", None),
    "ix_staff_notif_unread": ("staff_notifications", "user_id, id", "read_at IS NULL"),
}


def upgrade() -> None:
    for name, (table, columns, where) in INDEXES.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})"
            + (f" WHERE {where}" if where else "")
        )
    op.execute("DROP INDEX IF EXISTS ix_staff_notif_user")  # (user_id, read_at): replaced


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_staff_notif_user ON staff_notifications (user_id, read_at)"
    )
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
