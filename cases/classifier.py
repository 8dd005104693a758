"""Italian-aware keyword classifier: suggests a category for free text, with a confidence.

Text and keywords are folded the same way: lower case, accents removed, Snowball Italian
stemming (so 'buche', 'buca' and 'bucata' meet, as do 'perde' and 'perdita'). A keyword may be
a phrase; phrases weigh more than single words. Confidence is the winner's share of all the
evidence, so two categories matching equally give a low confidence and URP decides.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from cases.config import Category

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "il",
        "lo",
        "la",
        "i",
        "gli",
        "le",
        "un",
        "uno",
        "una",
        "di",
        "a",
        "da",
        "in",
        "con",
        "su",
        "per",
        "tra",
        "fra",
        "e",
        "o",
        "ma",
        "che",
        "non",
        "del",
        "della",
        "dei",
        "delle",
        "dello",
        "degli",
        "al",
        "alla",
        "ai",
        "alle",
        "allo",
        "agli",
        "dal",
        "dalla",
        "dai",
        "dalle",
        "dallo",
        "dagli",
        "nel",
        "nella",
        "nei",
        "nelle",
        "nello",
        "negli",
        "sul",
        "sulla",
        "sui",
        "sulle",
        "sullo",
        "sugli",
        "dell",
        "all",
        "nell",
        "dall",
        "sull",
        "quell",
        "un",
        "c",
        "ce",
        "ci",
        "si",
        "mi",
        "ti",
        "vi",
        "ne",
        "the",
        "an",
        "of",
        "to",
        "on",
        "at",
        "is",
        "are",
        "there",
        "and",
        "or",
    ]
)


_local = threading.local()


def _stemmer() -> snowballstemmer.stemmer:
    """One stemmer per thread: a Snowball stemmer keeps state while it works and, shared by
    gthread workers, raised IndexError or returned another word's stem."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("italian")
    return stemmer


def fold(text: str) -> str:
    """Lower case without accents: 'Città' -> 'citta'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    stem = str(_stemmer().stemWord(word))
    # Snowball keeps the 'h' that Italian spelling adds before e/i in plurals
    # (buca -> buc, buche -> buch): fold it so singular and plural meet.
    if stem.endswith(("ch", "gh")):
        stem = stem[:-1]
    return stem


def tokens(text: str) -> list[str]:
    """The stemmed content words of a text."""
    # One-letter tokens are elisions (d'acqua, l'albero) or noise; drop them with stop words.
    return [_stem(w) for w in _WORD.findall(fold(text)) if len(w) > 1 and w not in _STOP]


@dataclass(frozen=True)
class Suggestion:
    category: str | None
    confidence: float
    scores: dict[str, float]


class Classifier:
    """Built once per municipality's category list; classify() is pure and cheap."""

    def __init__(self, categories: list[Category]):
        # Keyword phrases indexed by their first token, each with its place in the
        # configuration: a text is scanned once, at each word only the phrases that start with
        # it are compared, and the scores are then added up in configuration order (so a tie
        # goes to the category listed first). A (category, phrase) pair counts once, however
        # often it occurs in the text or the configuration.
        self._by_first: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
        order: dict[tuple[str, tuple[str, ...]], int] = {}
        for c in categories:
            for kw in [*c.keywords, c.name_it, c.name_en]:
                toks = tuple(tokens(kw))
                if toks and (c.code, toks) not in order:
                    order[(c.code, toks)] = len(order)
                    self._by_first.setdefault(toks[0], []).append((len(order) - 1, c.code, toks))

    def classify(self, text: str) -> Suggestion:
        toks = tokens(text)
        found: dict[int, tuple[str, int]] = {}
        for i, tok in enumerate(toks):
            for rank, code, kw in self._by_first.get(tok, ()):
                if rank not in found and tuple(toks[i : i + len(kw)]) == kw:
                    found[rank] = (code, len(kw))
        if not found:
            return Suggestion(None, 0.0, {})
        scores: dict[str, float] = {}
        for rank in sorted(found):
            code, n = found[rank]
            scores[code] = scores.get(code, 0.0) + (1.0 if n == 1 else 1.5 * n)
        best = max(scores, key=lambda k: scores[k])
        confidence = scores[best] / (sum(scores.values()) + 0.5)
        return Suggestion(best, round(confidence, 3), scores)
