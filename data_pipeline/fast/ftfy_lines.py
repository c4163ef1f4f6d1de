"""ftfy's text fixing, with the lines it would leave unchanged skipped.

Replaces: `ftfy.fix_text(text, config)` as datatrove's `FTFYFormatter` calls it (steps/normalize.py).

Why it is faster: ftfy fixes a text line by line, each line through a dozen fixers written in Python; on
mostly-ASCII text that is where normalization spends its time. Here a line made only of characters that no
fixer touches is kept as it is, and only the other lines go through `ftfy.fix_and_explain`.

tests/fast/test_ftfy_lines.py checks that the result is ftfy's own on random texts full of what its fixers
change. Verified against ftfy 6.3 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

import re

import ftfy


# What ftfy never changes: printable ASCII, tab, newline and form feed, but for "&" (HTML entities).
_FTFY_ACTIVE = re.compile("[^\t\n\x0c\x20-\x7e]|&")


def _is_plain(text: str) -> bool:
    return text.isascii() and not _FTFY_ACTIVE.search(text)


def fix_text_skipping_plain_lines(text: str, config: ftfy.TextFixerConfig) -> str:
    """`ftfy.fix_text(text, config)`. The text is cut into the segments ftfy fixes one by one (up to each newline,
    at most `max_decode_length` characters), and `unescape_html="auto"` is switched off from the first segment
    with a "<" on, as ftfy does."""
    if _is_plain(text):
        return text
    html_kept = config._replace(unescape_html=False)
    out = []
    position = 0
    while position < len(text):
        end = text.find("\n", position) + 1 or len(text)
        end = min(end, position + config.max_decode_length)
        segment = text[position:end]
        if "<" in segment and config.unescape_html == "auto":
            config = html_kept
        if not _is_plain(segment):
            segment = ftfy.fix_and_explain(segment, config).text
        out.append(segment)
        position = end
    return "".join(out)
