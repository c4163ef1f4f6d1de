"""The fast Gopher quality and C4 filters decide, give reasons and (C4) leave text exactly like datatrove's."""

import random

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter

from bench.corpus_texts import book_texts, news_texts, web_texts
from data_pipeline.fast.heuristics import FastC4QualityFilter, FastGopherQualityFilter
from data_pipeline.fast.word_tokenizer import get_word_tokenizer

from ..conftest import SAMPLE

WORDS = "the be to of and that have with cat sat on mat dog ran far away extraordinarily uncharacteristically".split()
SYMBOLS = ["#", "...", "…", "-", "•", "!!", "(", ")", "{", "[edit]", "[12]", "2024", "x" * 40, "ß", "’s"]
LINE_ENDS = [".", "!", "?", '"', "'", "...", "", ":", "…"]
LINE_EXTRAS = ["", "", "", " javascript", " Lorem Ipsum", " uses cookies", " {x}", " Privacy Policy", " [citation needed]"]


def generated_document(rng: random.Random) -> str:
    """Lines of words, symbols and trigger phrases in random measure, so that every rule of both filters
    gets to decide: sentence counts around C4's minimum, bullets, ellipses, hashes, long and short words."""
    lines = []
    for _ in range(rng.randint(0, 14)):
        tokens = [rng.choice(WORDS) if rng.random() < rng.choice([0.3, 0.8, 1.0]) else rng.choice(SYMBOLS)
                  for _ in range(rng.randint(0, 12))]
        sentences = rng.choice([1, 1, 2, 3])
        line = ". ".join(" ".join(tokens) for _ in range(sentences)) + rng.choice(LINE_EXTRAS) + rng.choice(LINE_ENDS)
        lines.append(rng.choice(["", "", "- ", "• ", "  "]) + line)
    return rng.choice(["\n", "\n\n", "\r\n"]).join(lines)


def sample_texts() -> list[str]:
    return (list(book_texts(SAMPLE / "books"))[::8] + list(news_texts(SAMPLE / "news"))[::4]
            + list(web_texts(SAMPLE / "web"))[::3])


GOPHER_THRESHOLDS = {
    "datatrove defaults": {},
    "loose counts": dict(min_doc_words=5, max_doc_words=60, min_avg_word_length=4, max_avg_word_length=6,
                         max_symbol_word_ratio=0.05, max_bullet_lines_ratio=0.5, max_ellipsis_lines_ratio=0.2,
                         max_non_alpha_words_ratio=0.9, min_stop_words=3),
    "checks off": dict(min_doc_words=1, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
                       max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None, min_stop_words=None),
}
C4_THRESHOLDS = {
    "datatrove defaults": {},
    "sentences count": dict(filter_no_terminal_punct=False, min_num_sentences=8, min_words_per_line=1, max_word_length=30),
    "sentences off": dict(min_num_sentences=-1, remove_citations=False, filter_policy=False, filter_javascript=False),
    "split on sentences": dict(split_paragraph=False, min_num_sentences=3),
}


def assert_same_outcomes(stock_filter: type, fast_filter: type, options: dict, texts: list[str]) -> set:
    """Both filters, built with `options` and the fast tokenizer, decide alike and leave the same text; returns
    the outcomes (True or the reason) seen."""
    tokenizer = get_word_tokenizer("fast")
    stock, fast = stock_filter(**options, language=tokenizer), fast_filter(**options, language=tokenizer)
    outcomes = set()
    for i, text in enumerate(texts):
        stock_doc, fast_doc = Document(text=text, id=str(i)), Document(text=text, id=str(i))
        expected = stock.filter(stock_doc)
        assert fast.filter(fast_doc) == expected, f"document {i}: {text[:80]!r}"
        assert fast_doc.text == stock_doc.text, f"document {i}: {text[:80]!r}"
        outcomes.add(expected if expected is True else expected[1])
    return outcomes


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(11)
    return sample_texts() + [generated_document(rng) for _ in range(600)]


def test_gopher_quality_matches_datatrove_with_every_reason(texts):
    reasons = set()
    for name, options in GOPHER_THRESHOLDS.items():
        outcomes = assert_same_outcomes(GopherQualityFilter, FastGopherQualityFilter, options, texts)
        assert True in outcomes and len(outcomes) >= 4, f"{name}: too few outcomes exercised: {outcomes}"
        reasons |= outcomes
    assert reasons >= {True, "gopher_short_doc", "gopher_long_doc", "gopher_below_avg_threshold",
                       "gopher_above_avg_threshold", "gopher_too_many_hashes", "gopher_too_many_ellipsis",
                       "gopher_too_many_bullets", "gopher_too_many_end_ellipsis", "gopher_below_alpha_threshold",
                       "gopher_enough_stop_words"}


@pytest.mark.parametrize("thresholds", C4_THRESHOLDS, ids=list(C4_THRESHOLDS))
def test_c4_matches_datatrove(thresholds, texts):
    outcomes = assert_same_outcomes(C4QualityFilter, FastC4QualityFilter, C4_THRESHOLDS[thresholds], texts)
    assert True in outcomes and len(outcomes) >= 2, f"too few outcomes exercised: {outcomes}"


def test_c4_stops_counting_sentences_at_the_minimum_only():
    """Exactly at, one below and well above the minimum: the early stop must not change the verdict."""
    tokenizer = get_word_tokenizer("fast")
    for minimum in (1, 3, 5):
        stock, fast = C4QualityFilter(min_num_sentences=minimum, language=tokenizer), \
            FastC4QualityFilter(min_num_sentences=minimum, language=tokenizer)
        for sentences_per_line in (1, 2, 3):
            for lines in range(0, 8):
                text = "\n".join(" ".join(["The cat sat on the mat."] * sentences_per_line) for _ in range(lines))
                assert fast.filter(Document(text=text, id="x")) == stock.filter(Document(text=text, id="x")), \
                    (minimum, sentences_per_line, lines)
