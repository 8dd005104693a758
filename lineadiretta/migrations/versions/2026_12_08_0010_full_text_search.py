"""search by words with PostgreSQL's own full-text search: an Italian configuration that
also ignores accents (ld_italian: the italian stemmer after unaccent, so "citta" finds
"città" and "lampioni" finds "lampione"), a stored search vector of each case's text and
address, and one GIN index over it. It replaces the two trigram indexes of 0007, which
answered a rare combination of common words slowly at ten million cases (their posting lists
are a word's every three letters, rechecked against the rows) and cost every registration
about sixty index entries more. SQLite, the embedded default, keeps scanning.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 02:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CONFIG = "ld_italian"
VECTOR = f"to_tsvector('{CONFIG}'::regconfig, original_text || ' ' || coalesce(address, ''))"
TRIGRAM = {"ix_cases_text_trgm": "original_text", "ix_cases_address_trgm": "address"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")  # trusted: the owner may create it
    op.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{CONFIG}') THEN
            CREATE TEXT SEARCH CONFIGURATION {CONFIG} (COPY = pg_catalog.italian);
            ALTER TEXT SEARCH CONFIGURATION {CONFIG}
              ALTER MAPPING FOR word, hword, hword_part WITH unaccent, italian_stem;
          END IF;
        END $$""")
    op.execute(
        "ALTER TABLE cases ADD COLUMN IF NOT EXISTS search_vector tsvector"
        f" GENERATED ALWAYS AS ({VECTOR}) STORED"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_cases_search ON cases USING gin (search_vector)")
    for name in TRIGRAM:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    # Adding the column rewrote the table, and with it its visibility map: until a VACUUM,
    # the statistics' index-only scans would fetch every row they count (3x slower at ten
    # million cases), and nothing else makes autovacuum come soon. VACUUM runs outside the
    # migration's transaction.
    with op.get_context().autocommit_block():
        op.execute("VACUUM (ANALYZE) cases")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, column in TRIGRAM.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON cases USING gin ({column} gin_trgm_ops)")
    op.execute("DROP INDEX IF EXISTS ix_cases_search")
    op.execute("ALTER TABLE cases DROP COLUMN IF EXISTS search_vector")
    op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {CONFIG}")
