"""The fast Gopher repetition filter counts and decides exactly like datatrove's."""

import random

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)

from bench.corpus_texts import book_texts, news_texts
from data_pipeline.fast.repetition import FastGopherRepetitionFilter, NGramCounts, duplicates
from data_pipeline.fast.word_tokenizer import get_word_tokenizer

from ..conftest import SAMPLE

SIZES = list(range(1, 11))


def test_counts_match_datatrove_on_repetitive_word_lists():
    rng = random.Random(7)
    for _ in range(2000):
        # few and overlapping words: many repeats, and n-grams that join to the same string from different
        # words ("ab" + "c" and "a" + "bc"), which datatrove's separator-less joins treat as equal
        # (a word with a space makes " ".join() ambiguous too; "é", "\ud800" and "😀" take other code paths)
        pool = ["a", "b", "ab", "bc", "c", "", "abc", "é", "\ud800", "😀"] + (["x y", "x", "y"] if rng.random() < 0.3 else [])
        vocabulary = rng.sample(pool, rng.randint(1, 6))
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 80))]
        counts = NGramCounts(words)
        for n in SIZES:
            assert counts.repeated_chars(n) == find_all_duplicate(words, n), (words, n)
            n_grams = get_n_grams(words, n)
            assert counts.top_chars(n) == (find_top_duplicate(n_grams) if n_grams else None), (words, n)
        assert duplicates(words) == find_duplicates(words)


def repetitive_document(rng: random.Random) -> str:
    """Text with repeated lines, paragraphs and phrases in random measure: every check gets to decide."""
    phrases = [" ".join(rng.choice("the a of cat sat on mat and dog ran far away".split()) for _ in range(rng.randint(2, 9)))
               for _ in range(rng.randint(2, 12))]
    paragraphs = []
    for _ in range(rng.randint(1, 12)):
        lines = [rng.choice(phrases) + rng.choice([".", "", "!"]) for _ in range(rng.randint(1, 5))]
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


THRESHOLD_SETS = {
    "datatrove defaults": {},
    "n-grams only": dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None),
    "strict": dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
                   top_n_grams=((2, 0.01), (3, 0.01), (4, 0.01)), dup_n_grams=((5, 0.01), (6, 0.01), (10, 0.005))),
}


@pytest.mark.parametrize("thresholds", THRESHOLD_SETS, ids=list(THRESHOLD_SETS))
def test_decisions_and_reasons_match_datatrove(thresholds):
    tokenizer = get_word_tokenizer("fast")
    stock = GopherRepetitionFilter(**THRESHOLD_SETS[thresholds], language=tokenizer)
    fast = FastGopherRepetitionFilter(**THRESHOLD_SETS[thresholds], language=tokenizer)
    rng = random.Random(thresholds)
    texts = list(book_texts(SAMPLE / "books"))[::8] + list(news_texts(SAMPLE / "news"))[::4] + [repetitive_document(rng) for _ in range(300)] + [""]
    outcomes = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        expected = stock.filter(doc)
        assert fast.filter(doc) == expected, f"document {i}: {text[:80]!r}"
        outcomes.append(expected if expected is True else expected[1])
    assert True in outcomes and len(set(outcomes)) >= 4, f"too few outcomes exercised: {set(outcomes)}"
