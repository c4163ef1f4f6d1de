"""`fix_text_skipping_plain_lines` must give ftfy's own result."""

from __future__ import annotations

import random

import ftfy
import pytest

from data_pipeline.fast.ftfy_lines import fix_text_skipping_plain_lines
from data_pipeline.steps import TextNormalizer


# mojibake, HTML entities (and the "<" that turns their unescaping off for the rest of a text), C0 and C1
# controls, terminal escapes, line breaks of every kind, ligatures, surrogate pairs, plain lines
FTFY_PIECES = ["plain words", "caf\u00c3\u00a9", "\u00e2\u20ac\u2122", "&amp;", "&lt;b&gt;", "&#x2019;", "&hellip;",
               "a & b", "<", "x<y", "\x00", "\x07", "\x0b", "\x7f", "\x85", "\x92", "\x1b[31m", "\r\n", "\r", "\u2028",
               "\t", "\x0c", "\ufb01", "\ud83d\ude00", "\u00a0", "na\u00efve", "\u2014", " ", " ", "\n", "\n", "\n"]


@pytest.mark.parametrize("max_decode_length", [1_000_000, 7])
def test_skipping_plain_lines_gives_ftfys_own_result(max_decode_length):
    config = TextNormalizer().config._replace(max_decode_length=max_decode_length)
    rng = random.Random(max_decode_length)
    changed = 0
    for _ in range(3000):
        text = "".join(rng.choice(FTFY_PIECES) for _ in range(rng.randint(0, 30)))
        expected = ftfy.fix_text(text, config=config)
        assert fix_text_skipping_plain_lines(text, config) == expected, repr(text)
        changed += expected != text
    assert changed > 1000  # the texts gave ftfy work to do
