"""A fast English word tokenizer that splits text exactly like datatrove's stock spaCy one.

datatrove's Gopher, C4 and FineWeb quality filters and MinHash signatures split text with
`load_word_tokenizer("en")`: a blank spaCy English pipeline plus its sentencizer. Building a spaCy `Doc`
for every document (and every C4 line) is what dominates those steps' run time.

`FastWordTokenizer` reimplements, in plain Python with precompiled regexes, the algorithm that pipeline
runs (spaCy 3.x `Tokenizer.__call__` and `Sentencizer.predict`) with the same rules: the prefix, suffix
and infix patterns, the URL rule and the tokenizer-exception table of `spacy.blank("en")`, copied here so
that spaCy is not needed at run time. It is fast because it never builds a `Doc` and because it caches
the tokens of every whitespace-delimited chunk: most chunks of a corpus are words seen many times.
Pass an instance as `language=` to those steps; tests/test_word_tokenizer.py checks that their decisions
and MinHash signatures match the stock tokenizer's.

One known difference: spaCy mishandles the string "IS_ALPHA" (it is the name of one of its symbols) and
datatrove deletes it from texts where spaCy crashes on it; here it is an ordinary word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from string import ascii_letters
from typing import Any

from datatrove.utils.typeshelper import Languages
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer


# ---------------------------------------------------------------------------------------------------
# Character classes and affix patterns of spaCy's English tokenizer (spacy/lang/char_classes.py,
# spacy/lang/punctuation.py, spacy/lang/en/punctuation.py). Patterns are assembled from the same pieces,
# in the same order, as spaCy does: with Python's `re`, the first alternative that matches wins, so the
# order is part of the behaviour.
# ---------------------------------------------------------------------------------------------------

# spaCy's ALPHA: Latin (with its extended and phonetic blocks), Greek, Cyrillic, Hebrew, Arabic/Persian,
# Indic scripts, Sinhala, Ethiopic, Hangul, kana, CJK... as code-point ranges.
_ALPHA_RANGES = (
    (0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x00D6), (0x00D8, 0x00F6), (0x00F8, 0x01BF),
    (0x01C4, 0x02AF), (0x0386, 0x0386), (0x0388, 0x038A), (0x038C, 0x038C), (0x038E, 0x038F),
    (0x0391, 0x03A9), (0x03AC, 0x03AF), (0x03B1, 0x03C9), (0x03CC, 0x03CE), (0x0400, 0x0401),
    (0x0403, 0x040A), (0x040C, 0x040D), (0x0410, 0x0451), (0x0453, 0x045A), (0x045C, 0x045D),
    (0x0490, 0x0491), (0x0496, 0x0497), (0x04A2, 0x04A3), (0x04AE, 0x04AF), (0x04BA, 0x04BB),
    (0x04D8, 0x04D9), (0x04E8, 0x04E9), (0x0591, 0x05F4), (0x0620, 0x064A), (0x066E, 0x06D5),
    (0x06E5, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08BD), (0x0900, 0x09FF), (0x0B80, 0x0CFF),
    (0x0D80, 0x0DFF), (0x1100, 0x137F), (0x1D00, 0x1D25), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A),
    (0x1E00, 0x1EFF), (0x2C60, 0x2C7B), (0x2C7E, 0x2C7F), (0x2E80, 0x2FDF), (0x2FF0, 0x30FF),
    (0x31C0, 0x31EF), (0x3200, 0x4DBF), (0x4E00, 0x9FFF), (0xA722, 0xA76F), (0xA771, 0xA787),
    (0xA78B, 0xA78E), (0xA790, 0xA7B9), (0xA7FA, 0xA7FA), (0xAB30, 0xAB5A), (0xAB60, 0xAB64),
    (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFB1D, 0xFBB1), (0xFBD3, 0xFD3D), (0xFD50, 0xFDC7),
    (0xFDF0, 0xFDFB), (0xFE30, 0xFE4F), (0xFE70, 0xFEFC), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x1EE00, 0x1EEBB), (0x1F200, 0x1F2FF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F),
)
_ALPHA_CODE_POINTS = [cp for low, high in _ALPHA_RANGES for cp in range(low, high + 1)]
# spaCy lists lower- and upper-case letters by hand. Within ALPHA its lists amount to "not upper case" and
# "not lower case", except for these letters that it leaves out.
_NOT_LOWER = {0x01BB, 0x01C5, 0x01C8, 0x01CB, 0x01F2, 0x03A2}
_NOT_UPPER = {0x01BB, 0x01C5, 0x01C8, 0x01CB, 0x01F2, 0x0294}


def _char_class(code_points: Iterable[int]) -> str:
    """The body of a regex character class (no brackets) matching exactly `code_points`."""
    ranges: list[list[int]] = []
    for cp in sorted(code_points):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    escape = "\\U{:08X}".format
    return "".join(escape(low) if low == high else f"{escape(low)}-{escape(high)}" for low, high in ranges)


ALPHA = _char_class(_ALPHA_CODE_POINTS)
ALPHA_LOWER = _char_class(cp for cp in _ALPHA_CODE_POINTS if not chr(cp).isupper() and cp not in _NOT_LOWER)
ALPHA_UPPER = _char_class(cp for cp in _ALPHA_CODE_POINTS if not chr(cp).islower() and cp not in _NOT_UPPER)

# Copied verbatim from spacy/lang/char_classes.py (spaCy 3.8, MIT licence), quirks included.
_units = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft "
    "kg g mg µg t lb oz m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb "
    "TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм "
    "кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
    "كم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم غرام جرام جم كغ ملغ كوب اكواب"
)
_currency = (
    r"\$ £ € ¥ ฿ US\$ C\$ A\$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ € ₭ ₮ ₯ ₰ "
    r"₱ ₲ ₳ ₴ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₽ ₾ ₿"
)

# These expressions contain various unicode variations, including characters
# used in Chinese (see #1333, #1340, #1351) – unless there are cross-language
# conflicts, spaCy's base tokenizer should handle all of those by default
_punct = r"… …… , : ; \! \? ¿ ؟ ¡ \( \) \[ \] \{ \} < > _ # \* & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪"
_quotes = (
    r'\' " ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 〈 〉  ⟦ ⟧'
)
_hyphens = "- – — -- --- —— ~"

# Various symbols like dingbats, but also emoji
# Details: https://www.compart.com/en/unicode/category/So
_other_symbols = (
    r"\u00A6\u00A9\u00AE\u00B0\u0482\u058D\u058E\u060E\u060F\u06DE\u06E9\u06FD\u06FE\u07F6\u09FA\u0B70"
    r"\u0BF3-\u0BF8\u0BFA\u0C7F\u0D4F\u0D79\u0F01-\u0F03\u0F13\u0F15-\u0F17\u0F1A-\u0F1F\u0F34"
    r"\u0F36\u0F38\u0FBE-\u0FC5\u0FC7-\u0FCC\u0FCE\u0FCF\u0FD5-\u0FD8\u109E\u109F\u1390-\u1399"
    r"\u1940\u19DE-\u19FF\u1B61-\u1B6A\u1B74-\u1B7C\u2100\u2101\u2103-\u2106\u2108\u2109\u2114\u2116"
    r"\u2117\u211E-\u2123\u2125\u2127\u2129\u212E\u213A\u213B\u214A\u214C\u214D\u214F\u218A\u218B"
    r"\u2195-\u2199\u219C-\u219F\u21A1\u21A2\u21A4\u21A5\u21A7-\u21AD\u21AF-\u21CD\u21D0\u21D1\u21D3"
    r"\u21D5-\u21F3\u2300-\u2307\u230C-\u231F\u2322-\u2328\u232B-\u237B\u237D-\u239A\u23B4-\u23DB"
    r"\u23E2-\u2426\u2440-\u244A\u249C-\u24E9\u2500-\u25B6\u25B8-\u25C0\u25C2-\u25F7\u2600-\u266E"
    r"\u2670-\u2767\u2794-\u27BF\u2800-\u28FF\u2B00-\u2B2F\u2B45\u2B46\u2B4D-\u2B73\u2B76-\u2B95"
    r"\u2B98-\u2BC8\u2BCA-\u2BFE\u2CE5-\u2CEA\u2E80-\u2E99\u2E9B-\u2EF3\u2F00-\u2FD5\u2FF0-\u2FFB"
    r"\u3004\u3012\u3013\u3020\u3036\u3037\u303E\u303F\u3190\u3191\u3196-\u319F\u31C0-\u31E3"
    r"\u3200-\u321E\u322A-\u3247\u3250\u3260-\u327F\u328A-\u32B0\u32C0-\u32FE\u3300-\u33FF\u4DC0-\u4DFF"
    r"\uA490-\uA4C6\uA828-\uA82B\uA836\uA837\uA839\uAA77-\uAA79\uFDFD\uFFE4\uFFE8\uFFED\uFFEE\uFFFC"
    r"\uFFFD\U00010137-\U0001013F\U00010179-\U00010189\U0001018C-\U0001018E\U00010190-\U0001019B"
    r"\U000101A0\U000101D0-\U000101FC\U00010877\U00010878\U00010AC8\U0001173F\U00016B3C-\U00016B3F"
    r"\U00016B45\U0001BC9C\U0001D000-\U0001D0F5\U0001D100-\U0001D126\U0001D129-\U0001D164"
    r"\U0001D16A-\U0001D16C\U0001D183\U0001D184\U0001D18C-\U0001D1A9\U0001D1AE-\U0001D1E8"
    r"\U0001D200-\U0001D241\U0001D245\U0001D300-\U0001D356\U0001D800-\U0001D9FF\U0001DA37-\U0001DA3A"
    r"\U0001DA6D-\U0001DA74\U0001DA76-\U0001DA83\U0001DA85\U0001DA86\U0001ECAC\U0001F000-\U0001F02B"
    r"\U0001F030-\U0001F093\U0001F0A0-\U0001F0AE\U0001F0B1-\U0001F0BF\U0001F0C1-\U0001F0CF"
    r"\U0001F0D1-\U0001F0F5\U0001F110-\U0001F16B\U0001F170-\U0001F1AC\U0001F1E6-\U0001F202"
    r"\U0001F210-\U0001F23B\U0001F240-\U0001F248\U0001F250\U0001F251\U0001F260-\U0001F265"
    r"\U0001F300-\U0001F3FA\U0001F400-\U0001F6D4\U0001F6E0-\U0001F6EC\U0001F6F0-\U0001F6F9"
    r"\U0001F700-\U0001F773\U0001F780-\U0001F7D8\U0001F800-\U0001F80B\U0001F810-\U0001F847"
    r"\U0001F850-\U0001F859\U0001F860-\U0001F887\U0001F890-\U0001F8AD\U0001F900-\U0001F90B"
    r"\U0001F910-\U0001F93E\U0001F940-\U0001F970\U0001F973-\U0001F976\U0001F97A\U0001F97C-\U0001F9A2"
    r"\U0001F9B0-\U0001F9B9\U0001F9C0-\U0001F9C2\U0001F9D0-\U0001F9FF\U0001FA60-\U0001FA6D"
)


def _split_chars(chars: str) -> list[str]:
    return chars.strip().split(" ")


def _merge_chars(chars: str) -> str:
    return chars.strip().replace(" ", "|")


def _group_chars(chars: str) -> str:
    return chars.strip().replace(" ", "")


UNITS = _merge_chars(_units)
CURRENCY = _merge_chars(_currency)
PUNCT = _merge_chars(_punct)
HYPHENS = _merge_chars(_hyphens)
CONCAT_QUOTES = _group_chars(_quotes)
LIST_PUNCT = _split_chars(_punct)
LIST_QUOTES = _split_chars(_quotes)
LIST_CURRENCY = _split_chars(_currency)
LIST_ELLIPSES = [r"\.\.+", "…"]
LIST_ICONS = [f"[{_other_symbols}]"]

PREFIXES = (
    ["§", "%", "=", "—", "–", r"\+(?![0-9])"]
    + LIST_PUNCT
    + LIST_ELLIPSES
    + LIST_QUOTES
    + LIST_CURRENCY
    + LIST_ICONS
)
SUFFIXES = (
    LIST_PUNCT
    + LIST_ELLIPSES
    + LIST_QUOTES
    + LIST_ICONS
    + ["'s", "'S", "’s", "’S", "—", "–"]
    + [
        r"(?<=[0-9])\+",
        r"(?<=°[FfCcKk])\.",
        rf"(?<=[0-9])(?:{CURRENCY})",
        rf"(?<=[0-9])(?:{UNITS})",
        # PUNCT and the quote group are alternations, not character lists: inside [...] their "|", "(",
        # "?", ":" and ")" become members of the class. spaCy does the same, so we keep it.
        rf"(?<=[0-9{ALPHA_LOWER}%²\-\+{PUNCT}(?:{CONCAT_QUOTES})])\.",
        rf"(?<=[{ALPHA_UPPER}][{ALPHA_UPPER}])\.",
    ]
)
INFIXES = (  # English overrides the base infixes: hyphens also split after a digit ("3-day").
    LIST_ELLIPSES
    + LIST_ICONS
    + [
        r"(?<=[0-9])[+\-\*^](?=[0-9-])",
        rf"(?<=[{ALPHA_LOWER}{CONCAT_QUOTES}])\.(?=[{ALPHA_UPPER}{CONCAT_QUOTES}])",
        rf"(?<=[{ALPHA}]),(?=[{ALPHA}])",
        rf"(?<=[{ALPHA}0-9])(?:{HYPHENS})(?=[{ALPHA}])",
        rf"(?<=[{ALPHA}0-9])[:<>=/](?=[{ALPHA}])",
    ]
)

# spacy/lang/tokenizer_exceptions.py URL_PATTERN: a chunk (after affix splitting) that looks like a URL is
# kept whole instead of being split on infixes.
URL_PATTERN = (
    r"^"
    r"(?:(?:[\w\+\-\.]{2,})://)?"  # protocol
    r"(?:\S+(?::\S*)?@)?"  # user:pass authentication
    r"(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})"  # private and local networks
    r"(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"  # IP address
    r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    r"|"
    r"(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"  # host
    rf"(?:[{ALPHA_LOWER}]{{2,63}})"  # TLD
    r")"
    r"(?::\d{2,5})?"  # port
    r"(?:[/?#]\S*)?"  # path
    r"$"
)

# spaCy calls `search`; every alternative of the prefix pattern starts with "^", so `match` finds the same
# prefix without trying every position.
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
_ICON = re.compile(f"[{_other_symbols}]")
_has_digit = re.compile("[0-9]").search


def _suffix_possible(string: str) -> bool:
    last = string[-1]
    return last in _SUFFIX_LAST_CHARS or _ICON.match(last) is not None or _has_digit(string) is not None


# A suffix is a run of dots, a single character or one of these strings: `search` tries the pattern at every
# position from the left, so we make it start where the longest suffix could.
_LONGEST_SUFFIX = max(
    len(piece.replace("\\", "")) for piece in LIST_PUNCT + LIST_QUOTES + LIST_CURRENCY + _split_chars(_units) + ["'s"]
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
# Tokenizer exceptions ("special cases") of spacy.blank("en"), reduced to how they split a string
# (spacy/lang/tokenizer_exceptions.py BASE_EXCEPTIONS, updated with spacy/lang/en/tokenizer_exceptions.py).
# ---------------------------------------------------------------------------------------------------

_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-;
:( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p :-p
:O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD XDD 8D
8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 o.O O.o
O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯
(╯°□°）╯︵┻━┻ ><(((*>
"""

# Single-token exceptions: kept whole although affix rules would split them.
_ENGLISH_WHOLE_TOKENS = """
'S 's ‘S ‘s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock
lovin' Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin
Mt. Ak. Ala. Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul.
Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov.
Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis.
'd a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd. Md.
Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s.
"""

# Words that the rules below would take for contractions ("hell" = "he" + "ll"), so spaCy drops them.
_ENGLISH_EXCLUDED = set("Ill ill Its its Hell hell Shell shell Shed shed were Were Well well Whore whore".split())


def _english_special_cases() -> dict[str, tuple[str, ...]]:
    base: dict[str, tuple[str, ...]] = {}
    for orth in [" ", "\t", "\\t", "\n", "\\n", "\u2014", "\u00a0", "'", '\\")', "<space>", "''", "C++"]:
        base[orth] = (orth,)
    for orth in [f"{letter}." for letter in "abcdefghijklmnopqrstuvwxyzäöü"] + _EMOTICONS.split():
        base[orth] = (orth,)
    for unit in "cfkCFK":
        base[f"°{unit}."] = ("°", unit, ".")

    english: dict[str, tuple[str, ...]] = {}

    def add(*pieces: str) -> None:
        english["".join(pieces)] = pieces

    def cased(word: str) -> tuple[str, str]:
        return word, word.title()

    for orth in cased("i"):
        add(orth, "'m"), add(orth, "m"), add(orth, "'m", "a"), add(orth, "m", "a")
    for pronoun in ["i", "you", "he", "she", "it", "we", "they"]:
        for orth in cased(pronoun):
            add(orth, "'ll"), add(orth, "ll"), add(orth, "'ll", "'ve"), add(orth, "ll", "ve")
            add(orth, "'d"), add(orth, "d"), add(orth, "'d", "'ve"), add(orth, "d", "ve")
    for pronoun in ["i", "you", "we", "they"]:
        for orth in cased(pronoun):
            add(orth, "'ve"), add(orth, "ve")
    for pronoun in ["you", "we", "they"]:
        for orth in cased(pronoun):
            add(orth, "'re"), add(orth, "re")
    for pronoun in ["he", "she", "it"]:
        for orth in cased(pronoun):
            add(orth, "'s"), add(orth, "s")
    for word in ["who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"]:
        for orth in cased(word):
            if word not in ("these", "those"):
                add(orth, "'s"), add(orth, "s")
            add(orth, "'ll"), add(orth, "ll"), add(orth, "'ll", "'ve"), add(orth, "ll", "ve")
            if word not in ("that", "this"):
                add(orth, "'re"), add(orth, "re"), add(orth, "'ve"), add(orth, "ve")
            add(orth, "'d"), add(orth, "d"), add(orth, "'d", "'ve"), add(orth, "d", "ve")
    for verb in "ca could do does did had may might must need ought sha should wo would".split():
        for orth in cased(verb):
            add(orth, "n't"), add(orth, "nt"), add(orth, "n't", "'ve"), add(orth, "nt", "ve")
    for verb in ["could", "might", "must", "should", "would"]:
        for orth in cased(verb):
            add(orth, "'ve"), add(orth, "ve")
    for verb in ["ai", "are", "is", "was", "were", "have", "has", "dare"]:
        for orth in cased(verb):
            add(orth, "n't"), add(orth, "nt")
    for word in ["doin", "goin", "nothin", "nuthin", "ol", "somethin"]:
        for orth in cased(word):
            add(orth), add(orth + "'")
    for word in ["em", "ll", "nuff"]:
        add(word), add("'" + word)
    for hour in range(1, 13):
        for period in ["a.m.", "am", "p.m.", "pm"]:
            add(str(hour), period)
    other_contractions = "y'|all y|all how|'d|'y How|'d|'y not|'ve not|ve Not|'ve Not|ve can|not Can|not gon|na Gon|na"
    for pieces in f"{other_contractions} got|ta Got|ta let|'s Let|'s c'm|on C'm|on".split():
        add(*pieces.split("|"))
    for orth in _ENGLISH_WHOLE_TOKENS.split():
        add(orth)
    for orth in _ENGLISH_EXCLUDED:
        english.pop(orth, None)
    special_cases = base | english
    # Every case written with ' also exists with the typographic apostrophe.
    for orth, pieces in list(special_cases.items()):
        if "'" in orth:
            special_cases[orth.replace("'", "’")] = tuple(piece.replace("'", "’") for piece in pieces)
    return special_cases


SPECIAL_CASES: Mapping[str, tuple[str, ...]] = _english_special_cases()


# ---------------------------------------------------------------------------------------------------
# spaCy's tokenizer algorithm (spacy/tokenizer.pyx), for one whitespace-free chunk of text.
# ---------------------------------------------------------------------------------------------------


def _split_chunk(chunk: str, special_cases: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Peel prefixes and suffixes off `chunk`, then split what remains on infixes.

    `Tokenizer._split_affixes` and `_attach_tokens`. Peeling stops as soon as the remainder is a special case.
    """
    prefixes: list[str] = []
    suffixes: list[str] = []
    string = chunk
    last_size = 0
    while string and len(string) != last_size:
        if string in special_cases:
            break
        last_size = len(string)
        pre_len = _prefix_length(string)
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre in special_cases:
                prefixes.append(prefix)
                string = minus_pre
                break
        # Looked for in what follows the prefix, so that suffix lookbehinds cannot see the prefix.
        suf_len = _suffix_length(string[pre_len:])
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf in special_cases:
                suffixes.append(suffix)
                string = minus_suf
                break
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            prefixes.append(prefix)
            suffixes.append(suffix)
            string = string[pre_len:-suf_len]
        elif pre_len:
            prefixes.append(prefix)
            string = minus_pre
        elif suf_len:
            suffixes.append(suffix)
            string = minus_suf

    tokens = prefixes
    if string in special_cases:
        tokens.extend(special_cases[string])
    elif not _infix_possible(string) or _url_match(string):
        if string:
            tokens.append(string)
    else:
        start = 0
        for match in _infix_finditer(string):
            infix_start, infix_end = match.span()
            if infix_start == 0:  # an infix at the very start never splits
                continue
            if infix_start != start:
                tokens.append(string[start:infix_start])
            if infix_start != infix_end:
                tokens.append(string[infix_start:infix_end])
            start = infix_end
        if string[start:]:
            tokens.append(string[start:])
    tokens.extend(reversed(suffixes))
    return tokens


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


# ---------------------------------------------------------------------------------------------------
# spaCy's Sentencizer (spacy/pipeline/sentencizer.pyx): after a token that is one of these characters,
# the next token that is neither one of them nor made only of punctuation starts a new sentence.
# ---------------------------------------------------------------------------------------------------

SENTENCE_END_CHARS = frozenset(
    "!.?\u0589\u061f\u06d4\u0700\u0701\u0702\u07f9\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e"
    "\u1735\u1736\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1c3b\u1c3c"
    "\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877"
    "\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e"
    "\uff1f\U00010a56\U00010a57\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141"
    "\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239"
    "\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca"
    "\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3"
    "\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e"
    "\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00016a6e\U00016a6f\U00016af5"
    "\U00016b37\U00016b38\U00016b44\U0001bc9f\U0001da88\uff61\u3002"
)

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
