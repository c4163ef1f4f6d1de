"""FastWordTokenizer must split text exactly like datatrove's stock spaCy tokenizer, so that the quality
filters and MinHash make the same decisions with either.

The reference runs are the slow part; the sample is thinned (every few book chunks and speeches, the smaller
web pages) to keep the module under a minute.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
from collections.abc import Callable

import numpy as np
import pytest
import spacy
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer
from spacy.symbols import ORTH

from bench.corpus_texts import book_texts, news_texts, web_texts
from data_pipeline.fast import word_tokenizer
from data_pipeline.fast.word_tokenizer import FastWordTokenizer, get_word_tokenizer

from ..conftest import SAMPLE

BOOK_CHUNK_STRIDE = 6  # keep every 6th chunk
SPEECH_STRIDE = 6  # keep every 6th State of the Union address
MAX_WEB_PAGE_BYTES = 100_000  # the few larger pages would double the extraction time


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    texts = {"book": list(book_texts(SAMPLE / "books"))[::BOOK_CHUNK_STRIDE],
             "news": list(news_texts(SAMPLE / "news"))[::SPEECH_STRIDE],
             "web": list(web_texts(SAMPLE / "web", MAX_WEB_PAGE_BYTES))}
    return [Document(text=text, id=f"{kind}-{i}") for kind, batch in texts.items() for i, text in enumerate(batch)]


class MemoizedTokenizer(WordTokenizer):
    """Answers with `tokenizer`, working each text out once: several filters split the same document, and
    the stock tokenizer is what makes this module slow."""

    def __init__(self, tokenizer: WordTokenizer):
        super().__init__(tokenizer.language)
        self.tokenizer = tokenizer
        self.words: dict[str, list[str]] = {}
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def word_tokenize(self, text: str) -> list[str]:
        if text not in self.words:
            self.words[text] = self.tokenizer.word_tokenize(text)
        return list(self.words[text])

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        if text not in self.spans:
            self.spans[text] = self.tokenizer.span_tokenize(text)
        return list(self.spans[text])

    def sent_tokenize(self, text: str) -> list[str]:
        return self.tokenizer.sent_tokenize(text)


@pytest.fixture(scope="module")
def stock() -> WordTokenizer:
    return MemoizedTokenizer(get_word_tokenizer("stock"))


@pytest.fixture(scope="module")
def fast() -> WordTokenizer:
    return get_word_tokenizer("fast")


def test_words_and_sentences_match_spacy(documents, stock, fast):
    word_mismatches = [doc.id for doc in documents if fast.word_tokenize(doc.text) != stock.word_tokenize(doc.text)]
    span_mismatches = [doc.id for doc in documents if fast.span_tokenize(doc.text) != stock.span_tokenize(doc.text)]
    assert (word_mismatches, span_mismatches) == ([], [])


FILTERS: dict[str, Callable[[WordTokenizer], BaseFilter]] = {
    "gopher_quality": lambda tokenizer: GopherQualityFilter(language=tokenizer),
    "gopher_repetition": lambda tokenizer: GopherRepetitionFilter(language=tokenizer),
    "c4_quality": lambda tokenizer: C4QualityFilter(filter_no_terminal_punct=True, language=tokenizer),
    "fineweb_quality": lambda tokenizer: FineWebQualityFilter(language=tokenizer),
}


@pytest.mark.parametrize("name", FILTERS)
def test_filter_decisions_match_spacy(name, documents, stock, fast):
    reference, candidate = FILTERS[name](stock), FILTERS[name](fast)
    decisions, mismatches = [], []
    for doc in documents:
        # C4 rewrites the text of the documents it keeps: compare that too.
        reference_doc, candidate_doc = dataclasses.replace(doc), dataclasses.replace(doc)
        expected = reference.filter(reference_doc), reference_doc.text
        actual = candidate.filter(candidate_doc), candidate_doc.text
        decisions.append(expected[0] is True)
        if actual != expected:
            mismatches.append((doc.id, expected[0], actual[0]))
    assert mismatches == []
    assert any(decisions) and not all(decisions), "the sample should exercise both outcomes"


def test_minhash_signatures_match_spacy(documents, stock, fast, tmp_path):
    reference = MinhashDedupSignature(output_folder=str(tmp_path / "spacy"), language=stock)
    candidate = MinhashDedupSignature(output_folder=str(tmp_path / "fast"), language=fast)
    mismatches = []
    for doc in documents:
        expected_shingles, actual_shingles = reference.get_shingles(doc.text), candidate.get_shingles(doc.text)
        assert expected_shingles.size > 0, doc.id
        if (
            not np.array_equal(actual_shingles, expected_shingles)
            or candidate.get_signature(actual_shingles) != reference.get_signature(expected_shingles)
        ):
            mismatches.append(doc.id)
    assert mismatches == []


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "Don't stop (Mr. Smith) at 3-4 p.m. today!",
            ["Do", "n't", "stop", "(", "Mr.", "Smith", ")", "at", "3", "-", "4", "p.m.", "today", "!"],
        ),
        (
            "I'm gonna e-mail U.S. folks: it's 10km, cannot wait...",
            "I 'm gon na e - mail U.S. folks : it 's 10 km , can not wait ...".split(),
        ),
        (
            "See https://example.com/a-b?x=1, or mail me@example.org :)",
            ["See", "https://example.com/a-b?x=1", ",", "or", "mail", "me@example.org", ":)"],
        ),
        (
            "Prices rose 5% to $3.50 (about €3) in N.Y.",
            ["Prices", "rose", "5", "%", "to", "$", "3.50", "(", "about", "€", "3", ")", "in", "N.Y."],
        ),
        # "):" is an emoticon that spaCy puts back together after splitting off ")" and ":".
        ("def f(x):\n    return x**2", ["def", "f(x", "):", "return", "x**2"]),
        # ... unless a longer emoticon (":')") starting across the next space claims its ":" first.
        ("f(x): ')", ["f(x", ")", ":", "'", ")"]),
        ("", []),
        (" \n\t ", []),
    ],
)
def test_word_tokenize(text, words):
    assert FastWordTokenizer().word_tokenize(text) == words


@pytest.mark.parametrize(
    "text, sentences",
    [
        (
            "Hello world. How are you?  Fine!\n\nThanks... Bye",
            ["Hello world.", "How are you?", "Fine!", "Thanks... Bye"],
        ),
        (
            "Mr. Smith went to Washington. He arrived at 3 p.m. today.",
            ["Mr. Smith went to Washington.", "He arrived at 3 p.m. today."],
        ),
        # Closing quotes are punctuation: the sentence breaks before the next word instead.
        ('Wait... what?! "Really." Yes.', ['Wait... what?! "', 'Really."', "Yes."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("", []),
    ],
)
def test_sent_tokenize(text, sentences):
    assert FastWordTokenizer().sent_tokenize(text) == sentences


def test_spans_include_whitespace_tokens_like_spacy():
    # Whitespace other than the single space after a token is a token of its own and starts a sentence.
    assert FastWordTokenizer().span_tokenize("Hello.\n\nWorld  again.  x") == [(0, 6), (6, 21), (22, 24)]


def test_random_strings_match_spacy(stock):
    """Random strings of the pieces that the rules care about reach cases that hand-picked examples miss."""
    pieces = list("aAzZ09 .,;:!?'\"-–—()[]{}<>/\\@#$%^&*_+=~`|…’‘“”\n\t©😀\u00a0")
    pieces += "e.g. don't Mr. http:// www. .com n't 's :) °C. US$ km 3 é ß Ω 日本 a.m. gonna U.S. ...".split()
    pieces += ["1.5", "hi", "x):"]
    pieces += ["  ", "\n\n"]
    rng = random.Random(0)
    tokenizer = FastWordTokenizer()
    mismatches = []
    for _ in range(3_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        expected = stock.word_tokenize(text), stock.span_tokenize(text)
        if (tokenizer.word_tokenize(text), tokenizer.span_tokenize(text)) != expected:
            mismatches.append(text)
    assert mismatches == []


def test_special_cases_match_spacy():
    rules = spacy.blank("en").tokenizer.rules
    assert dict(word_tokenizer.SPECIAL_CASES) == {
        orth: tuple(token[ORTH] for token in tokens) for orth, tokens in rules.items()
    }


def test_affix_matchers_find_what_spacys_tokenizer_finds():
    """Our prefix, suffix and infix matchers (compiled by us from spaCy's pieces, their characters tested
    before their lookbehinds) find the same spans as the matchers of spaCy's own English tokenizer."""
    spacy_tokenizer = spacy.blank("en").tokenizer
    guarded = [piece for piece in word_tokenizer.SUFFIXES + word_tokenizer.INFIXES
               if word_tokenizer._test_character_first(piece) != piece]
    assert len(guarded) == 9  # the icons twice, and every piece led by a lookbehind on a long class
    pieces = list("aAzZ09.,:;<>=/+-*^~…–—''\"’“”%²°©😀éßΩ日x$([{)]}#&_") + ["US$", "km", "'s", "..", "——", "http"]
    rng = random.Random(1)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        prefix, spacy_prefix = word_tokenizer._prefix_match(text), spacy_tokenizer.prefix_search(text)
        assert (prefix and prefix.span()) == (spacy_prefix and spacy_prefix.span()), text
        suffix, spacy_suffix = word_tokenizer._suffix_search(text), spacy_tokenizer.suffix_search(text)
        assert (suffix and suffix.span()) == (spacy_suffix and spacy_suffix.span()), text
        spacy_infixes = [m.span() for m in spacy_tokenizer.infix_finditer(text)]
        assert [m.span() for m in word_tokenizer._infix_finditer(text)] == spacy_infixes, text


def test_url_matcher_matches_like_spacys_tokenizer():
    spacy_url_match = spacy.blank("en").tokenizer.url_match
    texts = ["http://example.com", "https://a.b.co.uk/x?y=1#z", "www.example.org", "example.com", "user@host.com",
             "10.0.0.1", "192.168.1.1", "8.8.8.8", "ftp://files.example.net/a.tar.gz", "a.b", "hello", "1.5",
             "http://localhost", "münchen.de", "e.g.", "U.S.", "x://y.z", "http://[::1]/"]
    for text in texts:
        ours, theirs = word_tokenizer._url_match(text), spacy_url_match(text)
        assert (ours and ours.span()) == (theirs and theirs.span()), text


def test_survives_pickling_without_its_caches():
    tokenizer = FastWordTokenizer()
    tokenizer.word_tokenize("Warm the cache up, please.")
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert len(pickle.dumps(tokenizer)) < 200
    assert clone.word_tokenize("It isn't cold.") == ["It", "is", "n't", "cold", "."]


def test_tokenizers_of_a_process_share_their_caches():
    """Each task of a worker unpickles its own tokenizer: the chunks an earlier task split stay split."""
    tokenizer = FastWordTokenizer(cache_size=1_000)
    tokenizer.word_tokenize("Shared-cache check, zqxw.")
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert "zqxw." in clone._chunk_words and clone._chunk_words is tokenizer._chunk_words
    assert FastWordTokenizer(cache_size=2_000)._chunk_words is not tokenizer._chunk_words


def test_get_word_tokenizer():
    assert isinstance(get_word_tokenizer("fast"), FastWordTokenizer)
    assert get_word_tokenizer("fast") is get_word_tokenizer("fast")  # its caches are shared
    assert get_word_tokenizer("stock").word_tokenize("Hi there.") == ["Hi", "there", "."]
    with pytest.raises(ValueError, match="'nltk'"):
        get_word_tokenizer("nltk")
