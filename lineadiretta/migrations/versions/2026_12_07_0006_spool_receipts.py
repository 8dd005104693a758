"""contacts kept in a host's spool while the register was away: when they were received (part of
the registration, immutable), the key that registers each once (intake_key), and the one reply
that carries their number (outbox.dedupe_key)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cases.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REGISTERED = (
    "municipality",
    "year",
    "number",
    "registered_at",
    "channel",
    "phone",
    "original_text",
    "registered_by",
)
RECEIPT = ("received_at", "intake_key")
ANNULMENT = ("annulled_at", "annulled_by", "annul_reason")
MSG_REGISTERED = "registered fields of a protocolled case cannot be changed (DPR 445/2000 art. 53)"
MSG_ANNULLED = "an annulled registration cannot be changed (DPR 445/2000 art. 54)"
MSG_DELETE = "a protocolled case is never deleted, only annulled (DPR 445/2000 art. 54)"


def _changed(cols: tuple[str, ...], op_: str) -> str:
    return " OR ".join(f"NEW.{c} {op_} OLD.{c}" for c in cols)


def _guard(cols: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
        CREATE OR REPLACE FUNCTION ld_cases_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN RAISE EXCEPTION '{MSG_DELETE}'; END IF;
          IF {_changed(cols, "IS DISTINCT FROM")} THEN
            RAISE EXCEPTION '{MSG_REGISTERED}';
          END IF;
          IF OLD.status = 'annulled' AND (NEW.status <> 'annulled' OR
             {_changed(ANNULMENT, "IS DISTINCT FROM")}) THEN
            RAISE EXCEPTION '{MSG_ANNULLED}';
          END IF;
          RETURN NEW;
        END $$;
        """)
    else:
        op.execute("DROP TRIGGER IF EXISTS ld_cases_registered")
        op.execute(
            f"""CREATE TRIGGER ld_cases_registered BEFORE UPDATE ON cases
            WHEN {_changed(cols, "IS NOT")}
            BEGIN SELECT RAISE(ABORT, '{MSG_REGISTERED}'); END"""
        )


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(
            sa.Column("received_at", cases.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("intake_key", sa.String(length=120), nullable=True))
    op.create_index("ux_cases_intake_key", "cases", ["municipality", "intake_key"], unique=True)
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(length=120), nullable=True))
    op.create_index("ux_outbox_dedupe_key", "outbox", ["dedupe_key"], unique=True)
    _guard(REGISTERED + RECEIPT)


def downgrade() -> None:
    _guard(REGISTERED)
    op.drop_index("ux_outbox_dedupe_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("dedupe_key")
    op.drop_index("ux_cases_intake_key", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("intake_key")
        batch.drop_column("received_at")
