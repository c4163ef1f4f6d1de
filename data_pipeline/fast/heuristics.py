"""datatrove's Gopher quality and C4 filters with less work per document: the same decisions and reasons.

`GopherQualityFilter` tests every word of a document with a Python generator (is it all punctuation, does it
have a letter); on the benchmark corpus that was a fifth of the quality step's time. Most words of a
document are repeats, so `FastGopherQualityFilter` tests each distinct word once and weighs it by its count.

`C4QualityFilter` splits every kept line into sentences, but the count only decides whether the document has
fewer than `min_num_sentences`; `FastC4QualityFilter` stops counting once that many are found. It also skips
the per-line counters datatrove keeps on the filter object: the quality step reports its own statistics and
never reads them.

tests/fast/test_heuristics.py checks decisions, reasons and the text C4 leaves against datatrove's filters.
Verified against datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import cache

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences, split_into_words

from data_pipeline.fast.thresholds import ABOVE, BELOW, first_failure

_is_punctuation_only = PUNCTUATION_SET.issuperset  # true for "" too, as datatrove's any() is false for it


def _has_letter(word: str) -> bool:
    return any(map(str.isalpha, word))


_TOO_FEW_SENTENCES = "too_few_sentences"


def _is_bullet(line: str) -> bool:
    return line.lstrip().startswith(("•", "-"))


def _ends_with_ellipsis(line: str) -> bool:
    return line.rstrip().endswith(("...", "…"))


def _ends_a_sentence(line: str) -> bool:
    return line.endswith(END_PUNCTUATION) and not line.endswith(ELLIPSIS)


class FastGopherQualityFilter(GopherQualityFilter):
    """Drop-in for `GopherQualityFilter`: the same constructor, checks, order and reasons."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        tokens = split_into_words(text, self.language)
        n_tokens = len(tokens)
        counts = Counter(tokens)
        words = [(word, count) for word, count in counts.items() if not _is_punctuation_only(word)]
        n_words = sum(count for _, count in words)

        @cache
        def mean_length() -> float:
            # datatrove takes np.mean of the lengths: an exact sum of integers divided once, as here (nan for none)
            return sum(len(word) * count for word, count in words) / n_words if n_words else float("nan")

        @cache
        def lines() -> list[str]:
            return text.splitlines()

        def share_of_lines(test: Callable[[str], bool]) -> float:
            return sum(map(test, lines())) / len(lines())

        def share_of_tokens(count: int) -> float:
            return count / n_tokens

        return first_failure(
            ("gopher_short_doc", self.min_doc_words, BELOW, lambda: n_words),
            ("gopher_long_doc", self.max_doc_words, ABOVE, lambda: n_words),
            ("gopher_below_avg_threshold", self.min_avg_word_length, BELOW, mean_length),
            ("gopher_above_avg_threshold", self.max_avg_word_length, ABOVE, mean_length),
            ("gopher_too_many_hashes", self.max_symbol_word_ratio, ABOVE, lambda: share_of_tokens(text.count("#"))),
            ("gopher_too_many_ellipsis", self.max_symbol_word_ratio, ABOVE,
             lambda: share_of_tokens(text.count("...") + text.count("…"))),
            ("gopher_too_many_bullets", self.max_bullet_lines_ratio, ABOVE, lambda: share_of_lines(_is_bullet)),
            ("gopher_too_many_end_ellipsis", self.max_ellipsis_lines_ratio, ABOVE,
             lambda: share_of_lines(_ends_with_ellipsis)),
            ("gopher_below_alpha_threshold", self.max_non_alpha_words_ratio, BELOW,
             lambda: share_of_tokens(sum(count for word, count in counts.items() if _has_letter(word)))),
            ("gopher_enough_stop_words", self.min_stop_words, BELOW, lambda: len(self.stop_words.intersection(counts))),
        )


class FastC4QualityFilter(C4QualityFilter):
    """Drop-in for `C4QualityFilter`: the same constructor, line rules, reasons and kept text."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        by_lines = self.split_paragraph
        units = doc.text.splitlines() if by_lines else split_into_sentences(doc.text, self.language)
        kept: list[str] = []
        sentences = 0
        for unit in units:
            line, rejection = self._line_outcome(unit.strip())
            if rejection is not None:
                return False, rejection
            if line is None:
                continue
            # the count only decides whether it stays below the minimum
            if self.min_num_sentences != -1 and sentences < self.min_num_sentences:
                sentences += len(split_into_sentences(line, self.language)) if by_lines else 1
            kept.append(line)
        if self.min_num_sentences > sentences:
            return False, _TOO_FEW_SENTENCES
        doc.text = ("\n".join(kept) if by_lines else " ".join(kept)).strip()
        return True

    def _line_outcome(self, line: str) -> tuple[str | None, str | None]:
        """(the line as kept, or None to drop it; the reason to reject the whole document, or None)."""
        words = line.split()  # counted before citations are removed, as datatrove does
        longest = self.max_word_length
        if longest != -1 and len(line) > longest and any(len(word) > longest for word in words):
            return None, None
        if self.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if self.filter_no_terminal_punct and not _ends_a_sentence(line):
            return None, None
        if self.min_words_per_line > len(words):
            return None, None
        lowered = line.lower()
        if self.filter_lorem_ipsum and "lorem ipsum" in lowered:
            return None, "lorem_ipsum"
        if self.filter_javascript and "javascript" in lowered:
            return None, None
        if self.filter_curly_bracket and "{" in line:
            return None, "curly_bracket"
        if self.filter_policy and any(phrase in lowered for phrase in POLICY_SUBSTRINGS):
            return None, None
        return line, None
