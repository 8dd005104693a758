"""Search by words in a case's text and address: every word, any order, any case, wildcards
taken literally. On PostgreSQL: full-text search (Italian stems as prefixes, accents ignored),
ranked, answered by one GIN index, not a scan; SQLite finds a word anywhere in a word."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from cases.models import Case
from cases.services import SEARCH_VECTOR, full_text_query, search_words
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


def test_every_word_in_the_text_or_the_address(staff: Staff, db_url: str) -> None:
    staff.add("urp", "urp")
    roma = _new(staff, "Buca profonda in via Roma, davanti al civico 12")
    lamp = _new(staff, "Lampione spento", address="Piazza Garibaldi 3")
    odd = _new(staff, "Sconto del 50% sul parcheggio_nord")
    assert _found(staff, "buca roma") == [roma]  # both words, not side by side
    assert _found(staff, "ROMA buca") == [roma]  # any order, any case
    assert _found(staff, "lampion garibaldi") == [lamp]  # the start of a word; the address too
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


def test_a_search_is_answered_by_the_full_text_index(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        return  # SQLite, the embedded default, scans (a municipality's register at most)
    with sessions() as s:
        asked = full_text_query(s, ["lampione", "via_roma"])
        assert asked == "'lampion' & 'via' & 'rom'"  # every word, by its stem
        assert full_text_query(s, ["di", "il"]) is None  # nothing left to look for
        query = select(Case.id).where(SEARCH_VECTOR.op("@@")(text(f"$q${asked}$q$::tsquery")))
        sql = str(query.compile(dialect=postgresql.dialect()))
        s.execute(text("SET LOCAL enable_seqscan = off"))  # only what an index can answer
        plan: Any = "\n".join(r[0] for r in s.execute(text(f"EXPLAIN {sql}")))
    assert "ix_cases_search" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_italian_words_are_found_by_their_stem_and_without_accents(
    staff: Staff, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        return  # SQLite matches the letters as written
    staff.add("urp", "urp")
    lamp = _new(staff, "Lampioni spenti in località Poggio Alto")
    city = _new(staff, "La città è al buio", address="Piazza dell'Unità d'Italia")
    assert _found(staff, "lampione") == [lamp]  # the singular finds the plural
    assert _found(staff, "localita poggio") == [lamp]  # typed without the accent
    assert _found(staff, "CITTA unita") == [city]
    assert _found(staff, "di") == []  # a word full-text search ignores: nothing to find


def test_a_common_word_is_found_among_the_newest_and_a_rare_one_anywhere(
    staff: Staff, db_url: str, monkeypatch: Any
) -> None:
    """The newest cases are read first (SEARCH_WINDOW of them); a word they hold too rarely
    is looked up through the indexes in the whole register: the same answer either way."""
    from cases import services

    monkeypatch.setattr(services, "SEARCH_WINDOW", 4)
    staff.add("urp", "urp")
    old = [_new(staff, f"Perdita d'acqua in via Verdi {i}") for i in range(3)]
    new = [_new(staff, f"Lampione spento in via Dante {i}") for i in range(6)]
    assert _found(staff, "lampione") == new[::-1]  # newest first, from the window
    assert _found(staff, "perdita verdi") == old[::-1]  # older than the window: still found
    assert _found(staff, "dante 2") == [new[2]]
    # enough matches among the newest: those are the answer, the total a lower bound
    monkeypatch.setattr(services, "RANKED", 2)
    body = staff.get("urp", "/cases", query_string={"q": "lampione", "per_page": 2}).get_json()
    assert [c["protocol"] for c in body["items"]] == new[::-1][:2]
    assert body["total"] == 2 and body["total_exact"] is False  # "at least"


def test_a_word_in_some_of_the_newest_is_looked_for_further_back(
    staff: Staff, db_url: str, monkeypatch: Any
) -> None:
    """One case in four holds the word: the newest four hold one match of the three wanted,
    so the search reads further back (as far as that share promises three), not the index:
    the newest three matches, and "at least three"."""
    from cases import services

    monkeypatch.setattr(services, "SEARCH_WINDOW", 4)
    monkeypatch.setattr(services, "RANKED", 3)
    staff.add("urp", "urp")
    made = [_new(staff, "Tombino otturato" if i % 4 == 0 else f"Lampione spento {i}")
            for i in range(16)]  # fmt: skip
    body = staff.get("urp", "/cases", query_string={"q": "tombino", "per_page": 3}).get_json()
    assert [c["protocol"] for c in body["items"]] == [made[12], made[8], made[4]]
    assert body["total"] == 3 and body["total_exact"] is False  # read back, not counted


def test_the_total_is_counted_up_to_a_cap(staff: Staff, db_url: str, monkeypatch: Any) -> None:
    from cases import services

    monkeypatch.setattr(services, "COUNT_CAP", 5)
    monkeypatch.setattr(services, "SEARCH_WINDOW", 3)
    staff.add("urp", "urp")
    made = [_new(staff, f"Buca numero {i}") for i in range(8)]
    for q in ({"q": "buca"}, {}):  # a word search and a plain list
        body = staff.get("urp", "/cases", query_string=dict(q, per_page=3)).get_json()
        assert body["total"] == 5 and body["total_exact"] is False, body
        assert [c["protocol"] for c in body["items"]] == made[::-1][:3]
    few = staff.get("urp", "/cases", query_string={"q": "numero 7"}).get_json()
    assert few["total"] == 1 and few["total_exact"] is True
    # past the counted matches the list goes on, newest first
    mid = staff.get("urp", "/cases", query_string={"q": "buca", "per_page": 3, "page": 2})
    assert [c["protocol"] for c in mid.get_json()["items"]] == made[::-1][3:6]
    far = staff.get("urp", "/cases", query_string={"q": "buca", "per_page": 3, "page": 3})
    assert [c["protocol"] for c in far.get_json()["items"]] == made[::-1][6:]


def test_a_word_of_one_or_two_letters_is_looked_for_where_a_word_starts(
    staff: Staff, db_url: str
) -> None:
    """A house number: "roma 2" finds via Roma 2 (and, on SQLite, where a word starts: 21),
    never 12 (anywhere, a digit or two would be in nearly every case)."""
    staff.add("urp", "urp")
    two = _new(staff, "Buca", address="via Roma 2")
    twenty_one = _new(staff, "Buca", address="via Roma 21")
    _new(staff, "Buca", address="via Roma 12")
    first = _new(staff, "2 lampioni spenti in via Roma")
    found = set(_found(staff, "roma 2"))
    if db_url.startswith("postgresql"):
        assert found == {two, first}  # full-text search: the number as a whole word
    else:
        assert found == {two, twenty_one, first}


def test_the_api_list_continues_after_a_case(staff: Staff, db_url: str) -> None:
    """Keyset pagination: `next_after` names the last case of a full page; `after` goes on
    from it, newest first, with no gap and no repeat, whatever the page's depth."""
    staff.add("urp", "urp")
    made = [_new(staff, f"Segnalazione {i}") for i in range(5)]
    seen: list[str] = []
    after = None
    for _ in range(5):
        args: dict[str, Any] = {"per_page": 2}
        if after:
            args["after"] = after
        body = staff.get("urp", "/cases", query_string=args).get_json()
        seen += [c["protocol"] for c in body["items"]]
        after = body["next_after"]
        if after is None:
            break
    assert seen == made[::-1]
    for bad in ({"after": "2026/9999999"}, {"after": "not a number"},
                {"after": made[0], "q": "segnalazione"}, {"after": made[0], "page": 2}):  # fmt: skip
        assert staff.get("urp", "/cases", query_string=bad).status_code == 400, bad
