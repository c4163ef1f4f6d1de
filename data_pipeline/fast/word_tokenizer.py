"""A fast English word tokenizer that splits text exactly like datatrove's stock spaCy one.

Replaces: datatrove's `load_word_tokenizer("en")` (a blank spaCy English pipeline plus its sentencizer),
which the Gopher, C4 and FineWeb quality filters and the MinHash signatures use to split text.

Why it is faster: it never builds a spaCy `Doc`, and it caches the tokens of every whitespace-delimited
chunk (most chunks of a corpus are words seen many times); the regexes test their cheap parts first.

How: the rules (prefix, suffix and infix pieces, URL pattern, tokenizer exceptions, the sentencizer's
punctuation) are read from the installed spaCy at import; the splitting follows the tokenizer's documented
algorithm (https://spacy.io/usage/linguistic-features#how-tokenizer-works) and the sentencizer's rule.
Verified against spaCy 3.8 and datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import):
tests/fast/test_word_tokenizer.py checks that words, sentences, filter decisions and MinHash signatures
match the stock tokenizer's. Pass an instance as `language=` to those steps.

One known difference: spaCy mishandles the string "IS_ALPHA" (it is the name of one of its symbols) and
datatrove deletes it from texts where spaCy crashes on it; here it is an ordinary word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import lru_cache
from string import ascii_letters
from typing import Any

from datatrove.utils.typeshelper import Languages
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer
from spacy.lang import tokenizer_exceptions
from spacy.lang.char_classes import (
    HYPHENS,
    LIST_CURRENCY,
    LIST_ICONS,
    LIST_PUNCT,
    LIST_QUOTES,
    UNITS,
)
from spacy.lang.en import English
from spacy.pipeline.sentencizer import Sentencizer
from spacy.symbols import ORTH


# ---------------------------------------------------------------------------------------------------
# The rules of `spacy.blank("en")`, read from the installed spaCy: its affix patterns, URL matcher,
# tokenizer exceptions and the sentencizer's sentence-ending characters. We compile our own regexes from
# the affix pieces, in spaCy's order (with `re`, the first alternative that matches wins).
# ---------------------------------------------------------------------------------------------------

PREFIXES: list[str] = list(English.Defaults.prefixes)
SUFFIXES: list[str] = list(English.Defaults.suffixes)
INFIXES: list[str] = list(English.Defaults.infixes)
URL_PATTERN: str = tokenizer_exceptions.URL_PATTERN
SPECIAL_CASES: Mapping[str, tuple[str, ...]] = {
    orth: tuple(token[ORTH] for token in tokens) for orth, tokens in English.Defaults.tokenizer_exceptions.items()
}
SENTENCE_END_CHARS = frozenset(Sentencizer.default_punct_chars)

# Every prefix piece is anchored with "^", so `match` finds what a search for the joined pattern would, without
# trying every position.
_prefix_match = re.compile("|".join("^" + piece for piece in PREFIXES if piece.strip())).match


def _test_character_first(piece: str) -> str:
    """`piece` with a lookahead on the character it consumes put before everything else: the same matches, but
    the long classes of its lookbehind (ALPHA has hundreds of ranges) and of the icons are not tried at every
    position of a string. Pieces without such classes are left as they are."""
    if piece == LIST_ICONS[0]:
        return f"(?![\\x00-\\x7f]){piece}"  # icons are not ASCII
    lookbehind_end = re.match(r"\(\?<=(?:\[(?:\\.|[^\]])*\])+\)", piece)
    if not lookbehind_end or len(piece) - lookbehind_end.end() < 1:
        return piece
    consumed = piece[lookbehind_end.end():]
    for head in (r"\.", ",", r"[+\-\*^]", "[:<>=/]"):  # what those pieces consume: one character
        if consumed.startswith(head):
            return f"(?={head}){piece}"
    if consumed.startswith(f"(?:{HYPHENS})"):
        return f"(?=[{''.join(sorted({hyphen[0] for hyphen in HYPHENS.split('|')}))}]){piece}"
    return piece


_suffix_search = re.compile("|".join(_test_character_first(piece) + "$" for piece in SUFFIXES if piece.strip())).search
_infix_finditer = re.compile("|".join(_test_character_first(piece) for piece in INFIXES if piece.strip())).finditer
_url_match = re.compile("(?u)" + URL_PATTERN).match

# Trying the patterns is the slow part of tokenizing a new chunk, so we avoid it where it cannot match.
# A suffix ends with "." (dots, abbreviations), the "s" of "'s", a character of one of the single-character
# pieces, or it follows a digit (units, currencies, "+").
_SUFFIX_LAST_CHARS = {"—", "–", ".", "s", "S"} | {piece[-1] for piece in LIST_PUNCT + LIST_QUOTES if piece.strip()}
_ICON = re.compile(LIST_ICONS[0])
_has_digit = re.compile("[0-9]").search


def _suffix_possible(string: str) -> bool:
    last = string[-1]
    return last in _SUFFIX_LAST_CHARS or _ICON.match(last) is not None or _has_digit(string) is not None


# A suffix is a run of dots, a single character or one of these strings: `search` tries the pattern at every
# position from the left, so we make it start where the longest suffix could.
_LONGEST_SUFFIX = max(
    len(piece.replace("\\", "")) for piece in LIST_PUNCT + LIST_QUOTES + LIST_CURRENCY + UNITS.split("|") + ["'s"]
)
# Most new chunks are words with punctuation around them, and for those the patterns need not be tried:
# - the only prefixes that start with an ASCII letter are the currencies "US$", "C$" and "A$";
# - after an ASCII letter, a final punctuation mark or quote is a suffix by itself, and so is a final "."
#   after a lower-case one (no longer suffix ends that way: "……" and ".." need another dot or ellipsis,
#   units and currencies a digit, "'s" an "s").
_ASCII_LETTERS = frozenset(ascii_letters)
_LETTER_PREFIXES = tuple(piece.replace("\\", "") for piece in PREFIXES if piece[:1] in _ASCII_LETTERS)
_LETTER_FOLLOWING_SUFFIXES = frozenset(
    char for char in (piece.replace("\\", "") for piece in LIST_PUNCT + LIST_QUOTES + ["—", "–"]) if len(char) == 1
)
# Every infix contains one of these characters.
_has_infix_char = re.compile(r"[.…,+\-*^–—~:<>=/]").search


def _infix_possible(string: str) -> bool:
    # the icon class is long: trying it on every character is slow, and ASCII has no icons
    return _has_infix_char(string) is not None or (not string.isascii() and _ICON.search(string) is not None)


def _prefix_length(string: str) -> int:
    if string[0] in _ASCII_LETTERS and not string.startswith(_LETTER_PREFIXES):
        return 0
    match = _prefix_match(string)
    return match.end() if match else 0


def _suffix_length(string: str) -> int:
    if len(string) > 1 and string[-2] in _ASCII_LETTERS:
        last = string[-1]
        if last in _LETTER_FOLLOWING_SUFFIXES or (last == "." and string[-2].islower()):
            return 1
    if not string or not _suffix_possible(string):
        return 0
    start = min(len(string) - _LONGEST_SUFFIX, len(string.rstrip(".")))
    match = _suffix_search(string, max(start, 0))  # lookbehinds still see the characters before `start`
    return match.end() - match.start() if match else 0


# ---------------------------------------------------------------------------------------------------
# Splitting one whitespace-free chunk, as the tokenizer's documentation describes it: peel prefixes and
# suffixes off until none is left or what is left is a special case, then split the rest on infixes unless
# it is a URL. Prefix and suffix rounds interleave, so the order of the cuts matters, and a cut whose
# remainder is a special case is the last one.
# ---------------------------------------------------------------------------------------------------


def _peel_affixes(chunk: str, special_cases: Mapping[str, tuple[str, ...]]) -> tuple[list[str], str, list[str]]:
    """`chunk` as (its prefixes, the core between them, its suffixes from the outermost in)."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    core = chunk
    while core and core not in special_cases:
        prefix_end = _prefix_length(core)
        if prefix_end and core[prefix_end:] in special_cases:
            prefixes.append(core[:prefix_end])
            return prefixes, core[prefix_end:], suffixes
        # Looked for after the prefix, so that a suffix's lookbehind cannot see the prefix.
        suffix_start = len(core) - _suffix_length(core[prefix_end:])
        has_suffix = suffix_start < len(core)
        if has_suffix and core[:suffix_start] in special_cases:  # the core keeps its prefix then
            suffixes.append(core[suffix_start:])
            return prefixes, core[:suffix_start], suffixes
        if not prefix_end and not has_suffix:
            break
        if prefix_end:
            prefixes.append(core[:prefix_end])
        if has_suffix:
            suffixes.append(core[suffix_start:])
        core = core[prefix_end:suffix_start]
    return prefixes, core, suffixes


def _split_infixes(core: str) -> list[str]:
    """`core` cut before and after each infix; an infix at its very start stays attached to what follows."""
    pieces = []
    piece_start = 0
    for match in _infix_finditer(core):
        if match.start() == 0:
            continue
        pieces += [piece for piece in (core[piece_start:match.start()], match.group()) if piece]
        piece_start = match.end()
    if core[piece_start:]:
        pieces.append(core[piece_start:])
    return pieces


def _split_chunk(chunk: str, special_cases: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The tokens of `chunk` before the final special-case pass (see `_apply_special_cases`)."""
    prefixes, core, suffixes = _peel_affixes(chunk, special_cases)
    if core in special_cases:
        middle = list(special_cases[core])
    elif not _infix_possible(core) or _url_match(core):
        middle = [core] if core else []
    else:
        middle = _split_infixes(core)
    return prefixes + middle + suffixes[::-1]


def _affix_split_special_cases() -> dict[tuple[str, ...], str]:
    """The special cases that spaCy's final special-case pass can restore, keyed by how affix rules alone
    split them ("a.m." -> "a.m", ".").

    Only cases split into several tokens: the others, if any, would replace a token by itself.
    """
    splits = {}
    for orth in SPECIAL_CASES:
        if _prefix_match(orth) or _suffix_search(orth) or next(_infix_finditer(orth), None):
            split = tuple(_split_chunk(orth, {}))
            if len(split) > 1:
                splits[split] = orth
    return splits


_AFFIX_SPLIT_SPECIAL_CASES = _affix_split_special_cases()
_AFFIX_SPLIT_FIRST_TOKENS = frozenset(split[0] for split in _AFFIX_SPLIT_SPECIAL_CASES)
_AFFIX_SPLIT_MAX_TOKENS = max(map(len, _AFFIX_SPLIT_SPECIAL_CASES))

_Token = tuple[int, str]  # (offset in the text, text)


def _apply_special_cases(tokens: list[_Token]) -> tuple[list[_Token], bool]:
    """spaCy's `Tokenizer._apply_special_cases` over tokens that no whitespace token separates.

    A run of tokens that spells a special case the way affix rules split it is replaced by that special
    case's tokens ("hi:)" -> "hi", ":", ")" -> "hi", ":)"). Runs may overlap; like spaCy's
    `_filter_special_spans` we look at the longest first, then the leftmost, and drop a run when its first
    or last token belongs to any run looked at before it, dropped or not. spaCy matches across the single
    spaces that separate chunks too; such a run is never applied (its text has a space in it) but it can
    still drop the runs it overlaps.

    Returns the new tokens and whether any run was applied.
    """
    if len(tokens) < 2:
        return tokens, False
    texts = [text for _, text in tokens]
    runs = [
        (start, end)
        for start, text in enumerate(texts)
        if text in _AFFIX_SPLIT_FIRST_TOKENS
        for end in range(start + 2, min(len(texts), start + _AFFIX_SPLIT_MAX_TOKENS) + 1)
        if tuple(texts[start:end]) in _AFFIX_SPLIT_SPECIAL_CASES
    ]
    if not runs:
        return tokens, False
    runs.sort(key=lambda run: (run[0] - run[1], run[0]))
    covered: set[int] = set()
    applied = []
    for start, end in runs:
        orth = "".join(texts[start:end])
        contiguous = tokens[end - 1][0] + len(texts[end - 1]) - tokens[start][0] == len(orth)
        # A run that already is the special case's tokens ("it", "'s") changes nothing.
        changes = SPECIAL_CASES[orth] != tuple(texts[start:end])
        if contiguous and changes and start not in covered and end - 1 not in covered:
            applied.append((start, end, orth))
        covered.update(range(start, end))
    if not applied:
        return tokens, False
    retokenized = []
    position = 0
    for start, end, orth in sorted(applied):
        retokenized += tokens[position:start]
        offset = tokens[start][0]
        for text in SPECIAL_CASES[orth]:
            retokenized.append((offset, text))
            offset += len(text)
        position = end
    return retokenized + tokens[position:], True


@lru_cache(maxsize=1 << 16)
def _chunk_raw_tokens(chunk: str) -> tuple[str, ...]:
    """spaCy's tokens for `chunk` (a string without whitespace) before its special-case pass."""
    tokens = SPECIAL_CASES.get(chunk)
    if tokens is not None:
        return tokens
    if chunk.isalpha():  # no affix or infix rule applies to letters
        return (chunk,)
    return tuple(_split_chunk(chunk, SPECIAL_CASES))


def _chunk_tokens(chunk: str) -> tuple[list[_Token], bool]:
    """spaCy's tokens for `chunk` on its own, and whether its special-case pass changed them: then its
    neighbours in the text may change them back (see `_apply_special_cases`)."""
    tokens = []
    offset = 0
    for text in _chunk_raw_tokens(chunk):
        tokens.append((offset, text))
        offset += len(text)
    return _apply_special_cases(tokens)


def _chunk_words(chunk: str) -> tuple[tuple[str, ...], bool]:
    """`_chunk_tokens` without the offsets."""
    words = _chunk_raw_tokens(chunk)
    if _AFFIX_SPLIT_FIRST_TOKENS.isdisjoint(words):  # the usual case: no special-case run can start here
        return words, False
    tokens, context_dependent = _chunk_tokens(chunk)
    return tuple(text for _, text in tokens), context_dependent


# Splits a text into its chunks (even indices) and the whitespace runs between them (odd indices); the
# first and last chunks are empty when the text starts or ends with whitespace. `\s`, `str.split` and
# `str.isspace` (which spaCy uses) agree on what whitespace is.
_WHITESPACE_SPLIT_RE = re.compile(r"(\s+)")


def _tokens_in_context(parts: list[str], index: int) -> list[_Token]:
    """The tokens of the chunk `parts[index]` (offsets relative to it) once the special-case pass has run
    over it and over the neighbours its runs can reach: up to a run's length away, across single spaces
    (see `_apply_special_cases`). `parts` is a text split by `_WHITESPACE_SPLIT_RE`."""
    reach = 2 * (_AFFIX_SPLIT_MAX_TOKENS - 1)  # in parts; every chunk has at least one token
    first = last = index
    while first > 1 and index - first < reach and parts[first - 1] == " " and parts[first - 2]:
        first -= 2
    while last + 2 < len(parts) and last - index < reach and parts[last + 1] == " " and parts[last + 2]:
        last += 2
    segment = []
    offset = 0
    for part_index in range(first, last + 1, 2):
        if part_index == index:
            chunk_start = offset
        for token in _chunk_raw_tokens(parts[part_index]):
            segment.append((offset, token))
            offset += len(token)
        offset += 1  # the space before the next chunk
    chunk_end = chunk_start + len(parts[index])
    tokens, _ = _apply_special_cases(segment)
    return [(start - chunk_start, text) for start, text in tokens if chunk_start <= start < chunk_end]


# The sentencizer (`Sentencizer.predict`): after a token that is one of SENTENCE_END_CHARS, the next token
# that is neither one of them nor made only of punctuation starts a new sentence.

# What a token is to the sentencizer.
_OTHER, _PUNCTUATION, _SENTENCE_END = 0, 1, 2

# What sentence splitting needs to know of a chunk's tokens, offsets relative to the chunk: (start, end, kind)
# of each. Usually no token of a chunk ends a sentence, and then all that matters is where its first
# `_OTHER` token starts (-1 if none has that kind): that number is all we keep.
_SentenceProfile = int | tuple[tuple[int, int, int], ...]


def _sentence_kind(token: str) -> int:
    if token in SENTENCE_END_CHARS:
        return _SENTENCE_END
    if all(unicodedata.category(char).startswith("P") for char in token):  # spaCy's Token.is_punct
        return _PUNCTUATION
    return _OTHER


def _sentence_profile(tokens: list[_Token]) -> _SentenceProfile:
    kinds = [_sentence_kind(text) for _, text in tokens]
    if _SENTENCE_END not in kinds:
        return next((start for (start, _), kind in zip(tokens, kinds) if kind == _OTHER), -1)
    return tuple((start, start + len(text), kind) for (start, text), kind in zip(tokens, kinds))


def _chunk_sentence_profile(chunk: str) -> tuple[_SentenceProfile, bool]:
    tokens, context_dependent = _chunk_tokens(chunk)
    return _sentence_profile(tokens), context_dependent


class _ChunkCache(dict):
    """Memoizes `compute(chunk) -> (value, context_dependent)`, forgetting everything at `max_size` entries.

    Context-dependent chunks (see `_chunk_tokens`) are memoized apart, in `context_dependent`, so that
    looking one up goes through `__missing__`, which sets `saw_context_dependent`, and leaves it absent from
    the cache itself. Other lookups cost one dict access.
    """

    def __init__(self, compute: Callable[[str], tuple[Any, bool]], max_size: int):
        super().__init__()
        self.compute = compute
        self.max_size = max_size
        self.context_dependent: dict[str, Any] = {}
        self.saw_context_dependent = False

    def __missing__(self, chunk: str) -> Any:
        if chunk in self.context_dependent:
            self.saw_context_dependent = True
            return self.context_dependent[chunk]
        value, context_dependent = self.compute(chunk)
        memo = self.context_dependent if context_dependent else self
        if len(memo) >= self.max_size:
            memo.clear()
        memo[chunk] = value
        self.saw_context_dependent |= context_dependent
        return value


@lru_cache(maxsize=None)
def _shared_chunk_caches(cache_size: int) -> tuple[_ChunkCache, _ChunkCache]:
    """The chunk caches of every tokenizer of this process with that size. A worker runs its tasks one after
    the other, each with its own unpickled tokenizer, and the MinHash step splits text too: most of the chunks
    one meets, another has already split."""
    return _ChunkCache(_chunk_words, cache_size), _ChunkCache(_chunk_sentence_profile, cache_size)


class FastWordTokenizer(WordTokenizer):
    """Splits English text into the same words and sentences as datatrove's `load_word_tokenizer("en")`,
    many times faster. Pass an instance as the `language=` of datatrove's filters and MinHash steps."""

    def __init__(self, cache_size: int = 1_000_000):
        super().__init__(Languages.english)
        self.cache_size = cache_size
        self._init_caches()

    def _init_caches(self) -> None:
        self._chunk_words, self._chunk_profiles = _shared_chunk_caches(self.cache_size)
        # the quality filters split the same document one after the other: the last answer is kept
        self._last_text: str | None = None
        self._last_words: list[str] = []

    # datatrove pickles pipeline steps, and with them this tokenizer, to send them to workers: the caches
    # stay behind (the worker's own are shared by its tokenizers).
    def __getstate__(self) -> dict:
        return {"language": self.language, "cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_caches()

    def word_tokenize(self, text: str) -> list[str]:
        if text is self._last_text:  # the same object, kept alive here: the same text
            return list(self._last_words)
        words = self._word_tokenize(text)
        self._last_text, self._last_words = text, words
        return list(words)

    def _word_tokenize(self, text: str) -> list[str]:
        # spaCy also makes tokens of whitespace, which datatrove drops.
        chunk_words = self._chunk_words
        chunk_words.saw_context_dependent = False
        words = [word for chunk in text.split() for word in chunk_words[chunk]]
        if not chunk_words.saw_context_dependent:
            return words
        parts = _WHITESPACE_SPLIT_RE.split(text)
        words = []
        for index in range(0, len(parts), 2):
            chunk = parts[index]
            chunk_tokens = chunk_words[chunk]
            if chunk not in chunk_words:  # context-dependent
                chunk_tokens = [word for _, word in _tokens_in_context(parts, index)]
            words += chunk_tokens
        return words

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans = []
        sentence_start = last_token_end = 0
        seen_sentence_end = False
        chunk_profiles = self._chunk_profiles
        parts = _WHITESPACE_SPLIT_RE.split(text)
        parts.append("")  # so that every chunk is followed by a whitespace run, the last one empty
        offset = 0  # of parts[index]
        for index in range(0, len(parts), 2):
            chunk, whitespace = parts[index], parts[index + 1]
            if chunk:
                profile = chunk_profiles[chunk]
                if chunk not in chunk_profiles:  # context-dependent
                    profile = _sentence_profile(_tokens_in_context(parts, index))
                if isinstance(profile, int):  # no sentence end: the first word starts a sentence if one ended
                    if seen_sentence_end and profile >= 0:
                        spans.append((sentence_start, offset + profile if profile else last_token_end))
                        sentence_start = offset + profile
                        seen_sentence_end = False
                else:
                    for token_start, token_end, kind in profile:
                        if kind == _SENTENCE_END:
                            seen_sentence_end = True
                        elif kind == _OTHER and seen_sentence_end:
                            spans.append((sentence_start, last_token_end))
                            sentence_start = offset + token_start
                            seen_sentence_end = False
                        last_token_end = offset + token_end
                offset += len(chunk)
                last_token_end = offset
                if whitespace == " ":  # attached to the token before it: no token
                    offset += 1
                    continue
            if whitespace:
                # spaCy attaches a single " " to the token before it; the rest of the run is a token of its
                # own, which is a word to the sentencizer.
                token_start = offset + 1 if chunk and whitespace[0] == " " else offset
                if seen_sentence_end:
                    spans.append((sentence_start, last_token_end))
                    sentence_start = token_start
                    seen_sentence_end = False
                offset += len(whitespace)
                last_token_end = offset
        if text:
            spans.append((sentence_start, last_token_end))
        return spans

    def sent_tokenize(self, text: str) -> list[str]:
        sentences = (text[start:end].strip() for start, end in self.span_tokenize(text))
        return [sentence for sentence in sentences if sentence]


@lru_cache(maxsize=None)
def get_word_tokenizer(components: str) -> WordTokenizer:
    """The English word tokenizer of `components`: "fast" (FastWordTokenizer) or "stock" (datatrove's spaCy one).

    One instance per process, so that all the steps using "fast" share its caches.
    """
    if components == "fast":
        return FastWordTokenizer()
    if components == "stock":
        return load_word_tokenizer(Languages.english)
    raise ValueError(f"unknown components {components!r}: expected 'fast' or 'stock'")
