"""datatrove's MinHash signature step with cheaper shingling: the same shingles, so the same signatures.

`MinhashDedupSignature` simplifies a document's text, splits it into words and hashes every n-gram. Two
parts of that run per character or per n-gram in Python: removing the combining marks after NFD (a
generator over every character, the largest cost on the benchmark corpus) and the loop that joins and
hashes each n-gram. Its signature then permutes every shingle's hash in one array, far larger than the CPU
caches for a long document. Here the marks are deleted by `str.translate` from the runs of non-ASCII
characters only (ASCII has none), the n-grams are joined and hashed by `map` over C functions, and the
permuted hashes are computed and reduced to their minimum a block of shingles at a time, in place.
tests/fast/test_minhash.py checks simplified texts, shingles and signatures against datatrove's.
Verified against datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import unicodedata
from functools import cache

import numpy as np
import xxhash

from datatrove.pipeline.dedup import MinhashDedupSignature
# datatrove's private `dedup.minhash._mersenne_prime` (2**61 - 1): the modulus of its hash permutations
from datatrove.pipeline.dedup.minhash import _mersenne_prime as MERSENNE_PRIME
from datatrove.utils.hashes import xxhash as datatrove_xxhash
from datatrove.utils.text import TextNormConfig, simplify_text

_SIGNATURE_BLOCK_ROWS = 2048  # shingles whose permuted hashes (rows of num_hashes) are computed at a time
# datatrove's hash functions are thin Python wrappers around these
_C_HASH_FUNCTIONS = {datatrove_xxhash.xxhash64: xxhash.xxh64_intdigest, datatrove_xxhash.xxhash32: xxhash.xxh32_intdigest}
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")


@cache
def _combining_marks_removed() -> dict[int, None]:
    """A `str.translate` table deleting every code point that this Python's unicodedata puts in category Mn
    (what datatrove removes), built from unicodedata itself so that both agree on every Unicode version."""
    return dict.fromkeys(cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn")


def remove_diacritics(text: str) -> str:
    """NFD, then drop the combining marks: datatrove's `norm_unicode_diacritics`. Marks are not ASCII, so only
    the runs of other characters are looked at, which is most of the saving on mostly-ASCII text."""
    if text.isascii():  # NFD leaves ASCII as it is, and it has no marks
        return text
    table = _combining_marks_removed()
    return _NON_ASCII_RUN.sub(lambda run: run.group().translate(table), unicodedata.normalize("NFD", text))


def fast_simplify_text(text: str, config: TextNormConfig) -> str:
    """datatrove's `simplify_text`, its diacritics step done by `remove_diacritics`.

    datatrove strips the text after that step; stripping it before as well changes nothing (NFD turns no
    character into whitespace, and removing marks can expose whitespace only to the final strip)."""
    if not config.norm_unicode_diacritics:
        return simplify_text(text, config)
    text = simplify_text(text, dataclasses.replace(config, norm_unicode_diacritics=False))
    return remove_diacritics(text).strip()


class FastMinhashDedupSignature(MinhashDedupSignature):
    """Drop-in for `MinhashDedupSignature`: the same constructor, shingles and signature files."""

    def get_shingles(self, text: str) -> np.ndarray:
        words = self.word_tokenizer.word_tokenize(fast_simplify_text(text, self.config.norm_config))
        n = self.config.n_grams
        n_grams = map(" ".join, zip(*(words[i:] for i in range(n))))
        upstream_hash = self._hash_func  # datatrove's private `MinhashDedupSignature._hash_func`
        hash_function = _C_HASH_FUNCTIONS.get(upstream_hash, upstream_hash)
        return np.fromiter(map(hash_function, n_grams), dtype=np.uint64).reshape((-1, 1))

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        if not len(shingles):  # datatrove raises on no shingles (its step never asks)
            return super().get_signature(shingles)
        a, b = self.parameters
        hash_config = self.config.hash_config
        smallest = None
        for start in range(0, len(shingles), _SIGNATURE_BLOCK_ROWS):
            permuted = shingles[start : start + _SIGNATURE_BLOCK_ROWS] * a  # uint64 wraps around, as datatrove's
            permuted += b
            permuted %= MERSENNE_PRIME
            if hash_config.precision == 32:  # masked before the minimum, as datatrove does
                permuted &= hash_config.max
            block_smallest = permuted.min(axis=0)
            smallest = block_smallest if smallest is None else np.minimum(smallest, block_smallest, out=smallest)
        return [bucket.tolist() for bucket in np.split(smallest.astype(hash_config.np_dtype), self.config.num_buckets)]
