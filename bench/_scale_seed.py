"""A region's register, seeded in PostgreSQL by set-based SQL (generate_series; not the ORM),
for bench/scale.py.

Twenty municipalities (the configured one, ``monteverde``, is the large city: a quarter of
the cases), ten years (more contacts each year, the current one up to today), one protocol
series per municipality and year, numbered 1..n in order of registration (gap-free, as the
register requires). The spread follows what a running deployment holds:

- channels: 40% SMS, 30% phone, 15% web, 8% counter, 5% API, 2% e-mail; a phone number on
  every SMS and call and on half the web reports; a citizen reports about four times in ten
  years (the phone numbers are drawn from a pool a quarter the size of the city's cases);
- statuses by age: of the last 30 days' cases 10% received, 20% assigned, 25% in progress,
  10% resolved, the rest closed (or not competent, annulled); of older cases 99% closed,
  0.2% still open (stragglers, flagged overdue long ago), the rest not competent or annulled;
- categories and offices as in config.toml, an operator of the office on every routed case;
- history in proportion: the registration, the routing and the closing (or annulment, or
  not-competent step), about three events per case; the texts to the citizen (assigned,
  closed) in the outbox for the SMS and phone cases, sent and delivered; the inbound text of
  every SMS case; one staff notification per routed case (read, but for open cases).

The secondary indexes are dropped while the rows go in and built afterwards (as a restore
does), then VACUUM ANALYZE leaves the tables as autovacuum keeps a running deployment's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from inbound_sms import PROBLEMS  # the same reports the inbound benchmark sends

MEASURED = "monteverde"
OTHERS = [f"comune{i:02d}" for i in range(1, 20)]
MUNIS = [MEASURED, *OTHERS]
BIG_TABLES = ("cases", "case_events", "outbox", "inbound_messages", "staff_notifications")
SMS_NUMBER = "+393475550123"  # monteverde's SMS number in config.toml
PASSWORD = "scale-bench-password"
YEARS = 10
ROME = ZoneInfo("Europe/Rome")

STREETS = [
    "via Roma",
    "piazza Garibaldi",
    "via Mazzini",
    "via Dante",
    "via dei Cipressi",
    "corso Italia",
    "viale della Repubblica",
    "via Verdi",
    "via Cavour",
    "via Manzoni",
    "località Poggio Alto",
    "via del Fiume",
    "via XX Settembre",
    "via Matteotti",
    "via Gramsci",
    "piazza del Duomo",
    "via San Francesco",
    "via della Stazione",
]
TAILS = ["", ". Grazie", ", è pericoloso", " da tre giorni", ". Potete mandare qualcuno?"]


def token_for(name: str) -> str:
    return f"scale-{name}-token"


def track_token(muni: str, year: int, number: int) -> str:
    """As the seed writes it: md5 of municipality/year/number (unique, 32 characters)."""
    return hashlib.md5(f"{muni}/{year}/{number}".encode()).hexdigest()


@dataclass(frozen=True)
class Staff:
    """Who works in each municipality; ids are laid out so that SQL can pick an operator."""

    offices: list[str]  # every office code, the URP included

    def base(self, mi: int) -> int:
        return 1 + mi * 100

    def supervisor(self, mi: int) -> int:
        return self.base(mi)

    def urp(self, mi: int) -> int:
        return self.base(mi) + 1

    def referent(self, mi: int, office: str) -> int:
        return self.base(mi) + 10 + self.offices.index(office) * 5

    def operator(self, mi: int, office: str, k: int) -> int:
        return self.referent(mi, office) + 1 + k  # k in 0..3

    def rows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for mi, m in enumerate(MUNIS):
            people = [(self.supervisor(mi), "sup", "supervisor", None),
                      (self.urp(mi), "urp", "urp", None)]  # fmt: skip
            for o in self.offices:
                people.append((self.referent(mi, o), f"ref-{o}", "referent", o))
                people += [(self.operator(mi, o, k), f"op-{o}-{k + 1}", "operator", o)
                           for k in range(4)]  # fmt: skip
            for uid, name, role, office in people:
                token = token_for(name) if m == MEASURED else f"{m}-{name}"
                out.append({
                    "id": uid, "municipality": m, "name": name, "role": role, "office": office,
                    "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                })  # fmt: skip
        return out


@dataclass(frozen=True)
class Plan:
    """How many cases each municipality registers each year."""

    total: int
    now: datetime

    def weights(self) -> list[float]:
        rest = [1 / (i + 1) ** 0.8 for i in range(len(OTHERS))]
        return [0.25, *(0.75 * w / sum(rest) for w in rest)]

    def years(self) -> list[int]:
        return list(range(self.now.year - YEARS + 1, self.now.year + 1))

    def spans(self) -> list[tuple[int, datetime, datetime, float]]:
        """(year, start, end, share of the contacts): growing use, this year up to now."""
        out = []
        for i, y in enumerate(self.years()):
            start = datetime(y, 1, 1, tzinfo=ROME)
            end = min(datetime(y + 1, 1, 1, tzinfo=ROME), self.now.astimezone(ROME))
            full = (datetime(y + 1, 1, 1, tzinfo=ROME) - start).total_seconds()
            out.append((y, start, end, (1 + 0.12 * i) * (end - start).total_seconds() / full))
        return out

    def counts(self) -> dict[str, list[tuple[int, int, datetime, datetime]]]:
        spans = self.spans()
        shares = sum(s for *_, s in spans)
        return {
            m: [(y, max(1, round(self.total * w * s / shares)), t0, t1) for y, t0, t1, s in spans]
            for m, w in zip(MUNIS, self.weights(), strict=True)
        }


CASES_SQL = """
INSERT INTO cases (municipality, year, number, registered_at, channel, phone, original_text,
    registered_by, language, category, suggested_category, suggestion_confidence, office,
    assignee_id, status, due_at, updated_at, closed_at, overdue_flagged_at, track_token,
    address, lat, long, annulled_at, annul_reason)
SELECT %(m)s::text, b.y, g.n, r.ts, d.channel,
    CASE WHEN d.channel IN ('sms', 'voice') OR (d.channel = 'web' AND r.r8 < 0.5)
         THEN '+393' || lpad((abs(hh.h2 %% %(pool)s::bigint) + 200000000)::text, 9, '0') END,
    (%(problems)s::text[])[1 + abs(hh.h %% %(np)s::int)::int] || ' '
        || (%(streets)s::text[])[1 + abs((hh.h / 7) %% %(ns)s::int)::int] || ' '
        || (1 + abs((hh.h / 11) %% 180)) || (%(tails)s::text[])[1 + abs((hh.h / 13) %% %(nt)s::int)::int],
    CASE WHEN d.channel = 'counter' THEN %(urp)s::int END,
    CASE WHEN r.r8 < 0.05 THEN 'en' ELSE 'it' END,
    CASE WHEN d.status <> 'received' THEN (%(cats)s::text[])[d.ci] END,
    (%(cats)s::text[])[d.ci], 0.5 + r.r7 / 2,
    CASE WHEN d.routed THEN (%(cat_office)s::text[])[d.ci] END,
    CASE WHEN d.routed THEN %(op_base)s::int + (%(cat_office_i)s::int[])[d.ci] * 5 + 1
                            + abs((hh.h2 / 3) %% 4)::int END,
    d.status, r.ts + (%(cat_days)s::int[])[d.ci] * interval '1 day',
    CASE WHEN d.done THEN r.ts + (1 + r.r7 * 20) * interval '1 day'
         WHEN d.status = 'annulled' THEN r.ts + interval '1 hour'
         ELSE r.ts + least(%(now)s::timestamptz - r.ts, interval '2 days') * r.r7 END,
    CASE WHEN d.done THEN r.ts + (1 + r.r7 * 20) * interval '1 day' END,
    CASE WHEN d.open AND r.ts + (%(cat_days)s::int[])[d.ci] * interval '1 day'
                         < %(now)s::timestamptz - interval '1 day'
         THEN r.ts + (%(cat_days)s::int[])[d.ci] * interval '1 day' + interval '1 hour' END,
    md5(%(m)s::text || '/' || b.y || '/' || g.n),
    CASE WHEN r.r8 < 0.65 THEN (%(streets)s::text[])[1 + abs((hh.h / 7) %% %(ns)s::int)::int]
                               || ' ' || (1 + abs((hh.h / 11) %% 180)) END,
    CASE WHEN r.r8 < 0.30 THEN 43.44 + r.r5 * 0.05 END,
    CASE WHEN r.r8 < 0.30 THEN 11.86 + r.r7 * 0.05 END,
    CASE WHEN d.status = 'annulled' THEN r.ts + interval '1 hour' END,
    CASE WHEN d.status = 'annulled' THEN 'Registrazione errata: doppio inserimento' END
FROM unnest(%(ys)s::int[], %(ns_)s::int[], %(t0s)s::timestamptz[], %(t1s)s::timestamptz[])
    AS b(y, cnt, t0, t1)
CROSS JOIN LATERAL generate_series(1, b.cnt) AS g(n)
CROSS JOIN LATERAL (SELECT hashint8extended(b.y * 100000000::bigint + g.n, %(seed)s::bigint) AS h,
                           hashint8extended(b.y * 100000000::bigint + g.n, %(seed)s::bigint + 1) AS h2,
                           hashint8extended(b.y * 100000000::bigint + g.n, %(seed)s::bigint + 2) AS h3)
    AS hh
CROSS JOIN LATERAL (SELECT b.t0 + (b.t1 - b.t0) * ((g.n - 0.5) / b.cnt) AS ts,
                           (hh.h & 65535) / 65536.0 AS r1,
                           (hh.h3 & 65535) / 65536.0 AS r5,
                           ((hh.h3 >> 16) & 65535) / 65536.0 AS r6,
                           ((hh.h3 >> 32) & 65535) / 65536.0 AS r7,
                           ((hh.h3 >> 48) & 32767) / 32768.0 AS r8) AS r
CROSS JOIN LATERAL (SELECT s.*, s.status IN ('assigned', 'in_progress', 'resolved', 'closed')
                                AS routed,
                           s.status IN ('received', 'assigned', 'in_progress', 'resolved')
                                AS open,
                           s.status IN ('closed', 'not_competent') AS done
    FROM (SELECT
        CASE WHEN r.r1 < 0.40 THEN 'sms' WHEN r.r1 < 0.70 THEN 'voice'
             WHEN r.r1 < 0.85 THEN 'web' WHEN r.r1 < 0.93 THEN 'counter'
             WHEN r.r1 < 0.98 THEN 'api' ELSE 'email' END AS channel,
        CASE WHEN %(now)s::timestamptz - r.ts < interval '30 days' THEN
            CASE WHEN r.r6 < 0.10 THEN 'received' WHEN r.r6 < 0.30 THEN 'assigned'
                 WHEN r.r6 < 0.55 THEN 'in_progress' WHEN r.r6 < 0.65 THEN 'resolved'
                 WHEN r.r6 < 0.985 THEN 'closed' WHEN r.r6 < 0.995 THEN 'not_competent'
                 ELSE 'annulled' END
        ELSE
            CASE WHEN r.r6 < 0.001 THEN 'in_progress' WHEN r.r6 < 0.002 THEN 'resolved'
                 WHEN r.r6 < 0.99 THEN 'closed' WHEN r.r6 < 0.995 THEN 'not_competent'
                 ELSE 'annulled' END
        END AS status,
        1 + abs(hh.h3 %% %(ncat)s::int)::int AS ci) AS s) AS d
"""

EVENTS_SQL = """
INSERT INTO case_events (case_id, at, actor_id, actor_label, action, from_status, to_status,
    note, public, data)
SELECT c.id, e.at, e.actor, e.label, e.action, e.fs, e.ts, e.note, true, '{}'::json
FROM cases c
CROSS JOIN LATERAL (VALUES
    (c.registered_at, NULL::int, 'sistema', 'register', NULL::text, 'received', '', true),
    (c.registered_at + interval '2 hours', %(urp)s::int, 'URP', 'assign', 'received', 'assigned',
     '', c.office IS NOT NULL),
    (c.closed_at, %(urp)s::int, 'URP', 'close', 'resolved', 'closed', 'Intervento eseguito.',
     c.status = 'closed'),
    (c.closed_at, %(urp)s::int, 'URP', 'not_competent', 'received', 'not_competent',
     'Di competenza della Provincia.', c.status = 'not_competent'),
    (c.annulled_at, %(urp)s::int, 'URP', 'annul', 'received', 'annulled', c.annul_reason,
     c.status = 'annulled')
) AS e(at, actor, label, action, fs, ts, note, keep)
WHERE c.municipality = %(m)s::text AND e.keep
"""

OUTBOX_SQL = """
INSERT INTO outbox (municipality, case_id, body, status, created_at, not_before, attempts,
    sent_at, phone, template, language, provider_sid, delivery_status, delivery_updated_at)
SELECT c.municipality, c.id, e.body, 'sent', e.at, e.at, 1, e.at + interval '2 seconds',
    c.phone, e.tpl, c.language, 'SM' || md5(e.tpl || c.id), 'delivered',
    e.at + interval '6 seconds'
FROM cases c
CROSS JOIN LATERAL (VALUES
    ('assigned', c.registered_at + interval '2 hours',
     'Comune: la segnalazione ' || c.year || '/' || lpad(c.number::text, 7, '0')
     || ' è stata assegnata all''ufficio ' || c.office || '.', c.office IS NOT NULL),
    ('closed', c.closed_at,
     'Comune: la segnalazione ' || c.year || '/' || lpad(c.number::text, 7, '0')
     || ' è stata chiusa. Intervento eseguito. Grazie.', c.status = 'closed')
) AS e(tpl, at, body, keep)
WHERE c.municipality = %(m)s::text AND c.channel IN ('sms', 'voice') AND e.keep
"""

INBOUND_SQL = """
INSERT INTO inbound_messages (municipality, channel, provider_sid, from_phone, to_phone, body,
    num_media, received_at, kind, case_id, language, reply)
SELECT c.municipality, 'sms', 'SM' || md5('in' || c.id), c.phone, %(to)s::text, c.original_text, 0,
    c.registered_at, 'new_case', c.id, c.language,
    'Comune: segnalazione registrata con protocollo ' || c.year || '/'
    || lpad(c.number::text, 7, '0') || '. Grazie.'
FROM cases c WHERE c.municipality = %(m)s::text AND c.channel = 'sms'
"""

NOTIFICATIONS_SQL = """
INSERT INTO staff_notifications (user_id, case_id, kind, text, data, created_at, read_at)
SELECT c.assignee_id, c.id, 'assigned',
    'Ti è stata assegnata la segnalazione ' || c.year || '/' || lpad(c.number::text, 7, '0'),
    '{}'::json, c.registered_at + interval '2 hours',
    CASE WHEN c.status IN ('assigned', 'in_progress', 'resolved') AND r < 0.3 THEN NULL
         ELSE c.registered_at + interval '1 day' END
FROM cases c, LATERAL (SELECT (hashint4(c.id) & 1023) / 1024.0 AS r) AS x
WHERE c.municipality = %(m)s::text AND c.assignee_id IS NOT NULL
"""


def _secondary_indexes(conn: object) -> list[tuple[str, str]]:
    """(name, definition) of the big tables' indexes that back no constraint."""
    rows = conn.execute(  # type: ignore[attr-defined]
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                          WHERE k.conindid = (quote_ident(i.indexname))::regclass)
        ORDER BY i.tablename, i.indexname
        """,
        (list(BIG_TABLES),),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def seed(libpq: str, total: int, now: datetime, say: Callable[[str], None] = print) -> dict:
    """Fill a freshly migrated database with `total` cases and their history; returns what
    was written (counts, seconds per phase, sizes)."""
    import psycopg

    muni = _measured()
    staff = _staff(muni)
    cats = [c.code for c in muni.categories]
    cat_office = [c.office for c in muni.categories]
    cat_days = [c.due_days or muni.due_days for c in muni.categories]
    plan = Plan(total, now)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET session_replication_role = replica")  # no FK checks while seeding
        dropped = _secondary_indexes(conn)
        for name, _ in dropped:
            conn.execute(f'DROP INDEX "{name}"')  # type: ignore[arg-type]
        from cases.auth import _hasher  # the product's own Argon2 parameters

        pw = _hasher.hash(PASSWORD)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, municipality, name, full_name, role, office, token_hash,"
                " password_hash, failed_logins, active, created_at) VALUES (%(id)s,"
                " %(municipality)s, %(name)s, %(name)s, %(role)s, %(office)s, %(token_hash)s,"
                " %(pw)s, 0, true, %(now)s::timestamptz)",
                [dict(r, pw=pw, now=now) for r in staff.rows()],
            )
        conn.execute("SELECT setval('users_id_seq', (SELECT max(id) FROM users))")
        t = time.perf_counter()
        counts = plan.counts()
        for mi, m in enumerate(MUNIS):
            blocks = counts[m]
            conn.execute(
                CASES_SQL,  # type: ignore[arg-type]
                {
                    "m": m,
                    "ys": [b[0] for b in blocks],
                    "ns_": [b[1] for b in blocks],
                    "t0s": [b[2] for b in blocks],
                    "t1s": [b[3] for b in blocks],
                    "seed": 1000 + mi,
                    "pool": max(100, sum(b[1] for b in blocks) // 4),
                    "problems": PROBLEMS,
                    "np": len(PROBLEMS),
                    "streets": STREETS,
                    "ns": len(STREETS),
                    "tails": TAILS,
                    "nt": len(TAILS),
                    "urp": staff.urp(mi),
                    "cats": cats,
                    "ncat": len(cats),
                    "cat_office": cat_office,
                    "cat_office_i": [staff.offices.index(o) for o in cat_office],
                    "cat_days": cat_days,
                    "op_base": staff.base(mi) + 10,
                    "now": now,
                },
            )
        conn.execute(
            "INSERT INTO protocol_counters (municipality, year, last_number)"
            " SELECT municipality, year, max(number) FROM cases GROUP BY municipality, year"
        )
        timings["cases"] = time.perf_counter() - t
        say(f"   cases written in {timings['cases']:.0f}s")
        for name, sql in (
            ("case_events", EVENTS_SQL),
            ("outbox", OUTBOX_SQL),
            ("inbound_messages", INBOUND_SQL),
            ("staff_notifications", NOTIFICATIONS_SQL),
        ):
            t = time.perf_counter()
            for mi, m in enumerate(MUNIS):
                conn.execute(sql, {"m": m, "urp": staff.urp(mi), "to": SMS_NUMBER})  # type: ignore[arg-type]
            timings[name] = time.perf_counter() - t
            say(f"   {name} written in {timings[name]:.0f}s")
        t = time.perf_counter()
        for _, definition in dropped:
            conn.execute(definition)  # type: ignore[arg-type]
        timings["indexes"] = time.perf_counter() - t
        say(f"   {len(dropped)} secondary indexes built in {timings['indexes']:.0f}s")
        t = time.perf_counter()
        for table in (*BIG_TABLES, "users", "protocol_counters"):
            conn.execute(f"VACUUM (ANALYZE) {table}")  # type: ignore[arg-type]
        timings["vacuum"] = time.perf_counter() - t
        say(f"   VACUUM ANALYZE in {timings['vacuum']:.0f}s")
        rows = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index, arg-type]
            for t in BIG_TABLES
        }
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        conn.execute(RECORD_SQL)
        conn.execute("INSERT INTO bench_scale_seed VALUES (%s, %s)", (total, now))
    timings["total"] = time.perf_counter() - t_all
    return {"rows": rows, "timings": timings, "bytes": size, "staff": staff, "plan": plan}


# what a seeded database was seeded with, so that a later run can measure it again
RECORD_SQL = "CREATE TABLE IF NOT EXISTS bench_scale_seed (total bigint, now timestamptz)"


def seeded_before(libpq: str) -> dict:
    """A database this module seeded earlier (`scale.py --database`), as `seed` describes it:
    its plan (the size and time it was seeded with), its staff, its rows and size."""
    import psycopg

    staff = _staff(_measured())
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(RECORD_SQL)
        got = conn.execute("SELECT total, now FROM bench_scale_seed").fetchone()
        if got is None:
            raise SystemExit("that database was not seeded by bench/_scale_seed.py")
        rows = {
            t: conn.execute(
                f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{t}'"
            ).fetchone()[0]  # type: ignore[arg-type]  # type: ignore[index]
            for t in BIG_TABLES
        }
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    return {
        "rows": rows,
        "timings": {"total": 0.0},
        "bytes": size,
        "staff": staff,
        "plan": Plan(int(got[0]), got[1]),
    }


def _measured() -> Any:
    from cases.config import load_config

    return load_config(_config_path()).get(MEASURED)


def _staff(muni: Any) -> Staff:
    return Staff([o.code for o in muni.offices])


def _config_path() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1] / "config.toml")


def utcnow() -> datetime:
    return datetime.now(UTC)
