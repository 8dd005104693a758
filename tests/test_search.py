"""Search by words in a case's text and address: every word, anywhere, any case, wildcards
taken literally; ranked on PostgreSQL and answered there by trigram indexes, not a scan."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from cases.models import Case
from cases.services import _mentions, search_words
from tests.conftest import Staff


def _new(staff: Staff, text: str, address: str = "") -> str:
    r = staff.post("urp", "/cases", {"channel": "counter", "text": text, "address": address})
    assert r.status_code == 201, r.get_json()
    protocol: str = r.get_json()["protocol"]
    return protocol


def _found(staff: Staff, q: str) -> list[str]:
    r = staff.get("urp", "/cases", query_string={"q": q})
    assert r.status_code == 200, r.get_json()
    return [c["protocol"] for c in r.get_json()["items"]]


def test_every_word_anywhere_in_the_text_or_the_address(staff: Staff, db_url: str) -> None:
    staff.add("urp", "urp")
    roma = _new(staff, "Buca profonda in via Roma, davanti al civico 12")
    lamp = _new(staff, "Lampione spento", address="Piazza Garibaldi 3")
    odd = _new(staff, "Sconto del 50% sul parcheggio_nord")
    assert _found(staff, "buca roma") == [roma]  # both words, not side by side
    assert _found(staff, "ROMA buca") == [roma]  # any order, any case
    assert _found(staff, "lampion garibaldi") == [lamp]  # part of a word; the address too
    assert _found(staff, "buca garibaldi") == []  # every word must be there
    assert _found(staff, "50%") == [odd]  # "%" is not a wildcard
    assert _found(staff, "parcheggio_nord") == [odd]  # nor "_"
    assert _found(staff, "parcheggioxnord") == []
    assert set(_found(staff, "")) == {roma, lamp, odd}  # no words: no filter


def test_the_closest_match_comes_first_on_postgresql(staff: Staff, db_url: str) -> None:
    staff.add("urp", "urp")
    close = _new(staff, "Buca in via Roma 12")  # the older one
    apart = _new(staff, "Roma: una buca enorme in via Garibaldi, quasi di fronte alla via")
    found = _found(staff, "via roma")
    if db_url.startswith("postgresql"):
        assert found == [close, apart]  # ranked by how close the words are
    else:
        assert found == [apart, close]  # SQLite: the newest first


def test_search_words_are_bounded() -> None:
    assert search_words("  Via,  ROMA!! 12 ") == ["via", "roma", "12"]
    assert len(search_words("a " * 100)) == 8
    assert search_words(None) == []


def test_a_search_is_answered_by_the_trigram_indexes(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        return  # SQLite, the embedded default, scans (a municipality's register at most)
    query = select(Case.id).where(_mentions("lampione"), _mentions("via_roma"))
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with sessions() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))  # only what an index can answer
        plan: Any = "\n".join(r[0] for r in s.execute(text(f"EXPLAIN {sql}")))
    assert "ix_cases_text_trgm" in plan and "ix_cases_address_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan
