"""The fast MinHash signature step simplifies text and computes shingles exactly like datatrove's."""

import random
import sys
import unicodedata

import numpy as np
import pytest
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig, simplify_text

from bench.corpus_texts import book_texts, news_texts
from data_pipeline.fast.minhash_signature import FastMinhashDedupSignature, fast_simplify_text, remove_diacritics
from data_pipeline.fast.word_tokenizer import get_word_tokenizer

from ..conftest import SAMPLE

# accents precomposed and combining, marks at the edges and alone, scripts whose marks are Mn (Devanagari,
# Hebrew points), marks of other categories (Mc, Me) that must stay, digits of other scripts, whitespace
PIECES = ["café", "cafe\u0301", "\u0301", " \u0301", "naïve", "Ångström", "ﬁ", "ǅ", "हिन्दी", "שָׁלוֹם", "\u0903", "\u20dd",
          "١٢٣", "2024", "Monday", "the", "cat", " ", "\n", "\t", "  ", "—", "...", "!", "é\u0301\u0302", "ẞ", "İ", "x"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) + rng.choice(["", " ", " ", "\n"]) for _ in range(rng.randint(0, 40)))


def test_remove_diacritics_matches_datatrove_on_every_code_point():
    text = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) != "Cs")
    expected = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    assert remove_diacritics(text) == expected


CONFIGS = [TextNormConfig(), TextNormConfig(norm_whitespace=False), TextNormConfig(remove_punctuation=False, lowercase=False),
           TextNormConfig(norm_weekdays=True, norm_monthnames=True), TextNormConfig(norm_unicode_diacritics=False)]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_simplified_text_matches_datatrove(config):
    rng = random.Random(3)
    for _ in range(1500):
        text = random_text(rng)
        assert fast_simplify_text(text, config) == simplify_text(text, config), repr(text)


@pytest.mark.parametrize("hash_config", [HashConfig(), HashConfig(precision=32), HashConfig(hash_fc="sha1")],
                         ids=["xxhash64", "xxhash32", "sha1"])
def test_shingles_and_signatures_match_datatrove(tmp_path, hash_config):
    tokenizer = get_word_tokenizer("fast")
    rng = random.Random(5)
    books = list(book_texts(SAMPLE / "books"))
    # a long document: its signature is computed over several blocks of shingles
    texts = (books[::10] + ["\n\n".join(books[:60])] + list(news_texts(SAMPLE / "news"))[::5]
             + [random_text(rng) for _ in range(200)] + ["", "one", "one two three four", "one two three four five"])
    for n_grams in (1, 5):
        config = MinhashConfig(n_grams=n_grams, hash_config=hash_config)
        stock = MinhashDedupSignature(str(tmp_path / "stock"), config=config, language=tokenizer)
        fast = FastMinhashDedupSignature(str(tmp_path / "fast"), config=config, language=tokenizer)
        for text in texts:
            expected = stock.get_shingles(text)
            shingles = fast.get_shingles(text)
            assert shingles.dtype == expected.dtype and np.array_equal(shingles, expected), repr(text[:80])
            if len(expected):
                assert fast.get_signature(shingles) == stock.get_signature(expected)



@pytest.mark.parametrize("hash_config", [HashConfig(), HashConfig(precision=32)], ids=["64", "32"])
def test_signature_looks_at_every_shingle(tmp_path, hash_config):
    """One shingle differs from all the others, at block boundaries and at the ends: it must count."""
    config = MinhashConfig(hash_config=hash_config)
    stock = MinhashDedupSignature(str(tmp_path / "stock"), config=config)
    fast = FastMinhashDedupSignature(str(tmp_path / "fast"), config=config)
    for rows in (1, 2, 2047, 2048, 2049, 6000):
        for odd_row in {0, 1, 2047, 2048, 4095, 4096, rows - 1} & set(range(rows)):
            shingles = np.full((rows, 1), 12_345_678_901, dtype=np.uint64)
            shingles[odd_row] = 987_654_321
            assert fast.get_signature(shingles) == stock.get_signature(shingles), (rows, odd_row)
