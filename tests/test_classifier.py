"""The keyword classifier with the example's categories: Italian-aware matching and confidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from cases.classifier import Classifier, fold, tokens
from cases.config import Category, Config, Municipality, load_config

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def muni(config: Config) -> Municipality:
    return config.get("monteverde")


@pytest.fixture(scope="module")
def classifier(muni: Municipality) -> Classifier:
    return Classifier(muni.categories)


def test_fold_removes_case_and_accents() -> None:
    assert fold("CITTÀ") == fold("città") == fold("citta") == "citta"
    assert fold("Perché PIÙ") == "perche piu"
    assert tokens("CITTÀ") == tokens("citta")


@pytest.mark.parametrize("text", ["CITTÀ SPORCA", "città sporca", "citta sporca", "Città Sporca!"])
def test_accents_and_case_do_not_matter(classifier: Classifier, text: str) -> None:
    s = classifier.classify(text)
    assert s.category == "pulizia"
    assert s == classifier.classify("città sporca")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # plurals and inflected forms meet their keyword through the stemmer
        ("ci sono due buche enormi in via Roma", "strade"),
        ("C'è una BUCA pericolosa davanti alla scuola", "strade"),
        ("il lampione è spento da giorni", "illuminazione"),
        ("lampioni spenti in piazza Garibaldi", "illuminazione"),
        ("perde acqua dal tombino", "acqua"),
        ("perdita d'acqua in via Verdi", "acqua"),
        ("c'è una perdita di acqua sotto casa", "acqua"),
        ("tombini otturati, la strada è allagata", "acqua"),
        ("cassonetti pieni da una settimana", "cassonetti"),
        ("rifiuti abbandonati vicino al fiume", "rifiuti"),
        ("auto in sosta vietata davanti al mio passo carrabile", "sosta"),
        ("un albero è caduto sulla strada", "alberi"),
        ("alberi caduti dopo il temporale", "alberi"),
        ("musica alta tutta la notte", "rumore"),
        ("rumori fino alle tre di notte", "rumore"),
        ("scritte e graffiti sul muro della scuola", "graffiti"),
        ("cani randagi al parco", "animali"),
        ("il semaforo di viale Europa è guasto", "semafori"),
        ("semafori guasti all'incrocio", "semafori"),
        ("panchine rotte al parco giochi", "arredo"),
        ("erba alta nei giardini pubblici", "verde"),
        ("topi in cortile", "infestazioni"),
        ("la fermata del bus non ha la pensilina", "trasporti"),
        ("anziano solo che ha bisogno di aiuto", "sociale"),
        ("la mia Carta d'IDENTITA è scaduta", "anagrafe"),
        ("devo pagare la TARI", "tributi"),
        # a few English texts
        ("there is a pothole in via Roma", "strade"),
        ("broken street light", "illuminazione"),
        ("stray dog near the school", "animali"),
    ],
)
def test_italian_texts_find_their_category(
    classifier: Classifier, muni: Municipality, text: str, category: str
) -> None:
    s = classifier.classify(text)
    assert s.category == category, s
    assert s.confidence >= muni.classifier_threshold


def test_singular_and_plural_keywords_meet(classifier: Classifier) -> None:
    for singular, plural in [
        ("lampione spento", "lampioni spenti"),
        ("cassonetto pieno", "cassonetti pieni"),
        ("albero caduto", "alberi caduti"),
        ("semaforo guasto", "semafori guasti"),
        ("marciapiede rotto", "marciapiedi rotti"),
    ]:
        assert tokens(singular) == tokens(plural)
        assert classifier.classify(singular).category == classifier.classify(plural).category


def test_phrase_weighs_more_than_a_word(classifier: Classifier) -> None:
    word = classifier.classify("lampione")
    phrase = classifier.classify("lampione spento")
    assert word.category == phrase.category == "illuminazione"
    assert phrase.scores["illuminazione"] > word.scores["illuminazione"]
    assert phrase.confidence > word.confidence


def test_ambiguous_text_has_low_confidence(classifier: Classifier, muni: Municipality) -> None:
    s = classifier.classify("buca vicino al cassonetto")
    assert s.scores == {"strade": 1.0, "cassonetti": 1.0}
    assert s.confidence < muni.classifier_threshold
    s = classifier.classify("lampione spento accanto al cassonetto pieno")
    assert s.scores["illuminazione"] == s.scores["cassonetti"]
    assert s.confidence < muni.classifier_threshold
    # A clear winner beside a weaker second category keeps a usable confidence.
    s = classifier.classify("lampione spento accanto al cassonetto")
    assert s.category == "illuminazione"
    assert s.confidence >= muni.classifier_threshold


@pytest.mark.parametrize(
    "text", ["buongiorno, vorrei parlare con il sindaco", "", "   ", "ho un altro problema", "???"]
)
def test_text_without_keywords(classifier: Classifier, text: str) -> None:
    s = classifier.classify(text)
    assert s.category is None
    assert s.confidence == 0
    assert s.scores == {}


def test_stop_words_alone_match_nothing(classifier: Classifier) -> None:
    assert classifier.classify("il lo la di da in con su per").category is None


def test_every_keyword_classifies_to_its_own_category(config: Config) -> None:
    """No keyword of the example is shadowed by another category's keyword."""
    for m in config.municipality:
        classifier = Classifier(m.categories)
        for category in m.categories:
            for keyword in [*category.keywords, category.name_it, category.name_en]:
                s = classifier.classify(keyword)
                assert s.category == category.code, f"{m.code}: {keyword!r} -> {s}"
                assert s.confidence >= m.classifier_threshold, f"{m.code}: {keyword!r} -> {s}"


def test_catch_all_category_is_never_suggested(config: Config) -> None:
    for m in config.municipality:
        classifier = Classifier(m.categories)
        for text in ["altro", "altre cose", "other", "un altro problema"]:
            assert classifier.classify(text).category != "altro"


def test_each_municipality_uses_its_own_categories(config: Config) -> None:
    small = Classifier(config.get("valfiorita").categories)
    assert small.classify("ci sono due buche enormi").category == "strade"
    assert small.classify("lampione spento").category == "illuminazione"
    assert small.classify("cassonetto pieno").category == "rifiuti"
    assert small.classify("topi in cortile").category is None


def test_plural_h_and_elisions_meet_their_keyword() -> None:
    from cases.classifier import tokens

    assert tokens("buca") == tokens("buche")
    assert tokens("perdita d'acqua") == tokens("perdita di acqua") == tokens("PERDITE dell'acqua")


def test_stemming_is_safe_under_threads() -> None:
    """gthread workers classify concurrently: every thread must get the stems it asked for."""
    import random
    import threading

    import snowballstemmer

    from cases import classifier

    words = [
        f"{base}{suffix}"
        for base in (
            "lampion",
            "buc",
            "marciapied",
            "rifiut",
            "semafor",
            "alber",
            "tombin",
            "cassonett",
        )
        for suffix in ("e", "i", "a", "o", "hi", "ato")
    ]
    reference = snowballstemmer.stemmer("italian")
    expected = {w: reference.stemWord(w) for w in words}
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            w = rng.choice(words)
            try:
                got = classifier._stemmer().stemWord(w)
            except Exception as exc:  # the shared stemmer raised IndexError
                errors.append(repr(exc))
                continue
            if got != expected[w]:
                errors.append(f"{w}: {got} != {expected[w]}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_ties_go_to_the_category_listed_first_whatever_the_word_order() -> None:
    """The scores are added up in configuration order, not in the order the words come."""
    cats = [
        Category(code="first", name_it="Primo", name_en="First", office="A", keywords=["buca"]),
        Category(code="second", name_it="Secondo", name_en="Second", office="A",
                 keywords=["lampione"]),
    ]  # fmt: skip
    clf = Classifier(cats)
    for text in ("buca e lampione", "lampione e buca"):
        s = clf.classify(text)
        assert s.category == "first"
        assert list(s.scores) == ["first", "second"]
    # the reverse configuration gives the reverse answer: the order, not the word, decides
    assert Classifier(cats[::-1]).classify("buca e lampione").category == "second"


def test_a_phrase_counts_once_however_often_it_occurs() -> None:
    cats = [
        Category(code="strade", name_it="Strade", name_en="Roads", office="A",
                 keywords=["buca", "buca profonda", "buca"]),
    ]  # fmt: skip
    s = Classifier(cats).classify("buca profonda, buca profonda, un'altra buca")
    assert s.scores == {"strade": 1.0 + 3.0}
