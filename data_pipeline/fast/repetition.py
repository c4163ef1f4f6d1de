"""datatrove's Gopher repetition filter with its n-gram counting done in numpy: the same decisions and reasons.

`GopherRepetitionFilter` measures how much of a document repeats: duplicate paragraphs and lines, the most
frequent 2- to 4-gram, and the characters covered by repeated 5- to 10-grams. datatrove builds every
n-gram of every size as a string, in Python loops; with the fast word tokenizer, that was most of the
quality step's time on the benchmark corpus. `NGramCounts` finds equal n-grams with numpy instead (integer
codes of word sequences, polynomial hashes of joined words) and builds strings only for the n-grams that
occur more than once, which it compares as strings, so a hash collision cannot change a count. The one
count that is sequential (the scan that jumps past each repeated n-gram) loops only over those.
tests/fast/test_repetition.py checks every count and decision against datatrove's own functions.
Verified against datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from functools import cached_property

import numpy as np

from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.utils.text import split_into_words

from data_pipeline.fast.thresholds import ABOVE, first_failure


def duplicates(items: list[str]) -> tuple[int, int]:
    """(number, total length) of the items equal to an earlier item: datatrove's `find_duplicates`."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


# Polynomial hashes of strings modulo a prime: the hash of a word is its UTF-32 bytes read as one integer,
# i.e. the code points as digits in base 2**32, so that of "ab" + "c" equals that of "a" + "bc", as their
# joined n-grams do. Equal hashes are only a hint: strings are compared before anything is counted.
_PRIME = 1_500_000_001  # products of two residues stay below 2**63
_BASE = 2**32 % _PRIME
_INVERSE_BASE = pow(_BASE, -1, _PRIME)
_MAX_WORDS_REMEMBERED = 1_000_000


def _word_hash(word: str) -> int:
    return int.from_bytes(word.encode("utf-32-le", "surrogatepass"), "little") % _PRIME


def _powers(base: int, exponents: np.ndarray) -> np.ndarray:
    """base ** exponents % _PRIME, element by element."""
    result = np.ones_like(exponents)
    remaining = exponents.copy()
    while remaining.any():
        result = np.where(remaining & 1, result * base % _PRIME, result)
        base = base * base % _PRIME
        remaining >>= 1
    return result


class NGramCounts:
    """The n-gram statistics of one document's words that the Gopher repetition filter compares with its
    thresholds. Words are numbered, n-grams are found equal through integer codes or string hashes computed
    with numpy, and only n-grams that occur more than once are ever built as strings."""

    _word_hashes: dict[str, int] = {}  # shared by all documents of the process: most words recur

    def __init__(self, words: list[str]):
        self.words = words
        distinct = list(dict.fromkeys(words))
        index = {word: i for i, word in enumerate(distinct)}
        self.ids = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
        self.vocabulary = len(distinct)
        self.lengths = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))[self.ids]
        # a word with a space in it could make " ".join() of different words equal: count strings then
        self.spaced_words_are_unambiguous = not any(" " in word for word in distinct)
        self._distinct = distinct
        self._codes = {1: self.ids}  # n -> _tuple_codes(n)

    def top_chars(self, n: int) -> int | None:
        """Length times count of the most frequent n-gram (words joined by spaces; the first met among the most
        frequent), None without n-grams: datatrove's `find_top_duplicate(get_n_grams(words, n))`."""
        if len(self.words) < n:
            return None
        if not self.spaced_words_are_unambiguous:
            gram, count = Counter(" ".join(self.words[i : i + n]) for i in range(len(self.words) - n + 1)).most_common(1)[0]
            return len(gram) * count
        _, first_positions, counts = np.unique(self._tuple_codes(n), return_index=True, return_counts=True)
        best = counts.max()
        position = first_positions[counts == best].min()
        return (int(self.lengths[position : position + n].sum()) + n - 1) * int(best)

    def repeated_chars(self, n: int) -> int:
        """datatrove's `find_all_duplicate(words, n)`: scan the n-grams (words joined without a separator) from
        the start; an n-gram already met at a scanned position adds its length and the scan jumps past its n
        words, which are then neither counted nor remembered.

        Only positions whose n-gram occurs more than once matter, and only those are visited; for each, what
        counts is whether an earlier occurrence was scanned: the first one unless a jump passed over it, or a
        later one that the loop itself remembered.
        """
        count = len(self.words) - n + 1
        if count < 2:
            return 0
        _, inverse, sizes = np.unique(self._joined_hashes(n), return_inverse=True, return_counts=True)
        recurring = np.flatnonzero(sizes[inverse] > 1).tolist()
        words = self.words
        grams = ["".join(words[position : position + n]) for position in recurring]
        first: dict[str, int] = {}
        for position, gram in zip(recurring, grams):
            first.setdefault(gram, position)
        jumped = bytearray(count)  # 1 where a jump passed over the position
        remembered_again: set[str] = set()  # n-grams remembered at a position other than their first
        repeated = 0
        for position, gram in zip(recurring, grams):
            first_position = first[gram]
            if first_position == position or jumped[position]:
                continue
            if not jumped[first_position] or gram in remembered_again:
                repeated += len(gram)
                end = min(position + n, count)
                jumped[position + 1 : end] = b"\x01" * (end - position - 1)
            else:
                remembered_again.add(gram)
        return repeated

    def _tuple_codes(self, n: int) -> np.ndarray:
        """One integer per n-gram, equal for equal word sequences (kept dense so that products cannot overflow)."""
        if n not in self._codes:
            pairs = self._tuple_codes(n - 1)[: len(self.words) - n + 1] * self.vocabulary + self.ids[n - 1 :]
            self._codes[n] = np.unique(pairs, return_inverse=True)[1].reshape(-1)
        return self._codes[n]

    @cached_property
    def _prefix_hashes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, prefix, unshift): offsets[k] is where word k starts in the words joined, prefix[k] the hash of
        the first k words joined (every code point at the power of its offset), unshift[k] the factor that brings
        a hash starting at word k back to power 0."""
        known = self._word_hashes
        if len(known) > _MAX_WORDS_REMEMBERED:
            known.clear()
        for word in self._distinct:
            if word not in known:
                known[word] = _word_hash(word)
        word_hashes = np.fromiter(map(known.__getitem__, self._distinct), dtype=np.int64, count=self.vocabulary)[self.ids]
        offsets = np.concatenate(([0], np.cumsum(self.lengths)))
        terms = word_hashes * _powers(_BASE, offsets[:-1]) % _PRIME
        prefix = np.concatenate(([0], np.cumsum(terms) % _PRIME))
        return offsets, prefix, _powers(_INVERSE_BASE, offsets[:-1])

    def _joined_hashes(self, n: int) -> np.ndarray:
        """For each position, the hash of its n words joined without a separator, with its length: equal for
        equal strings (and, rarely, for others)."""
        offsets, prefix, unshift = self._prefix_hashes
        count = len(self.words) - n + 1
        hashes = (prefix[n:] - prefix[:count]) % _PRIME * unshift[:count] % _PRIME
        return hashes * 2**31 + (offsets[n:] - offsets[:count])


def _repeated_parts(kind: str, parts: list[str], size: int, max_repeated: float, max_repeated_chars: float
                    ) -> bool | tuple[bool, str]:
    """The checks on the `parts` (paragraphs or lines) of a text of `size` characters that repeat an earlier part."""
    repeated, repeated_chars = duplicates(parts)
    return first_failure(
        (f"dup_{kind}_frac", max_repeated, ABOVE, lambda: repeated / len(parts)),
        (f"dup_{kind}_char_frac", max_repeated_chars, ABOVE, lambda: repeated_chars / size),
    )


class FastGopherRepetitionFilter(GopherRepetitionFilter):
    """Drop-in for `GopherRepetitionFilter`: the same constructor, checks, order and reasons."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        size = len(text)

        outcome = _repeated_parts("para", self.paragraph_exp.split(text.strip()), size,
                                  self.dup_para_frac, self.dup_para_char_frac)
        if outcome is not True:
            return outcome
        lines = self._line_splitter.split(text)  # datatrove's private `GopherRepetitionFilter._line_splitter`
        outcome = _repeated_parts("line", lines, size, self.dup_line_frac, self.dup_line_char_frac)
        if outcome is not True:
            return outcome

        # n-gram limits are checked even when 0
        counts = NGramCounts(split_into_words(text, self.language))
        top = ((f"top_{n}_gram", limit, lambda n=n: counts.top_chars(n)) for n, limit in self.top_n_grams)
        repeated = ((f"duplicated_{n}_n_grams", limit, lambda n=n: counts.repeated_chars(n))
                    for n, limit in self.dup_n_grams)
        for reason, max_fraction, measure in chain(top, repeated):
            chars = measure()  # None: no n-gram of that size
            if chars is not None and chars / size > max_fraction:
                return False, reason
        return True
