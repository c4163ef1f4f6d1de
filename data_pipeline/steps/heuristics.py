"""datatrove's Gopher quality and C4 filters with less work per document: the same decisions and reasons.

`GopherQualityFilter` tests every word of a document with a Python generator (is it all punctuation, does it
have a letter); on the benchmark corpus that was a fifth of the quality step's time. Most words of a
document are repeats, so `FastGopherQualityFilter` tests each distinct word once and weighs it by its count.

`C4QualityFilter` splits every kept line into sentences, but the count only decides whether the document has
fewer than `min_num_sentences`; `FastC4QualityFilter` stops counting once that many are found. It also skips
the per-line counters datatrove keeps on the filter object: the quality step reports its own statistics and
never reads them.

tests/test_heuristics.py checks decisions, reasons and the text C4 leaves against datatrove's filters.
"""

from __future__ import annotations

from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences, split_into_words

_is_punctuation_only = PUNCTUATION_SET.issuperset  # true for "" too, as datatrove's any() is false for it


def _has_letter(word: str) -> bool:
    return any(map(str.isalpha, word))


class FastGopherQualityFilter(GopherQualityFilter):
    """Drop-in for `GopherQualityFilter`: the same constructor, checks, order and reasons."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        words = split_into_words(text, self.language)
        n_words = len(words)
        counts = Counter(words)
        non_symbol = [(word, count) for word, count in counts.items() if not _is_punctuation_only(word)]
        n_non_symbol_words = sum(count for _, count in non_symbol)

        if self.min_doc_words and n_non_symbol_words < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_non_symbol_words > self.max_doc_words:
            return False, "gopher_long_doc"

        # datatrove takes np.mean of the lengths: an exact sum of integers divided once, as here (nan for none)
        total_length = sum(len(word) * count for word, count in non_symbol)
        average_length = total_length / n_non_symbol_words if n_non_symbol_words else float("nan")
        if self.min_avg_word_length and average_length < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and average_length > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"

        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"

        lines = text.splitlines()
        if self.max_bullet_lines_ratio:
            bullet_lines = sum(line.lstrip().startswith(("•", "-")) for line in lines)
            if bullet_lines / len(lines) > self.max_bullet_lines_ratio:
                return False, "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio:
            ellipsis_lines = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            if ellipsis_lines / len(lines) > self.max_ellipsis_lines_ratio:
                return False, "gopher_too_many_end_ellipsis"

        if self.max_non_alpha_words_ratio:
            alpha_words = sum(count for word, count in counts.items() if _has_letter(word))
            if alpha_words / n_words < self.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold"

        if self.min_stop_words and len(self.stop_words.intersection(counts)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True


class FastC4QualityFilter(C4QualityFilter):
    """Drop-in for `C4QualityFilter`: the same constructor, line rules, reasons and kept text."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lines = doc.text.splitlines() if self.split_paragraph else split_into_sentences(doc.text, self.language)
        num_sentences = 0
        kept_lines = []
        for line in lines:
            line = line.strip()
            words = line.split()
            # no word is longer than the line
            if self.max_word_length != -1 and len(line) > self.max_word_length and any(
                len(word) > self.max_word_length for word in words
            ):
                continue
            if self.remove_citations:
                line = CITATION_REGEX.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                continue
            if len(words) < self.min_words_per_line:
                continue
            line_lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in line_lower:
                return False, "lorem_ipsum"
            if self.filter_javascript and "javascript" in line_lower:
                continue
            if self.filter_curly_bracket and "{" in line:
                return False, "curly_bracket"
            if self.filter_policy and any(phrase in line_lower for phrase in POLICY_SUBSTRINGS):
                continue
            # the count only decides whether it stays below the minimum
            if self.min_num_sentences != -1 and num_sentences < self.min_num_sentences:
                num_sentences += len(split_into_sentences(line, self.language)) if self.split_paragraph else 1
            kept_lines.append(line)
        if num_sentences < self.min_num_sentences:
            return False, "too_few_sentences"
        doc.text = ("\n" if self.split_paragraph else " ").join(kept_lines).strip()
        return True
