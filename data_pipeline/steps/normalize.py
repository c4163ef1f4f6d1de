"""Repair and normalize text: mojibake, line breaks, invisible characters, Unicode normal form."""

from __future__ import annotations

import re
import unicodedata

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.formatters.ftfy import FTFYFormatter
from datatrove.utils.typeshelper import StatHints

from data_pipeline.bad_records import BadRecord, BadRecordLog
from data_pipeline.config import NormalizeConfig
from data_pipeline.fast.ftfy_lines import fix_text_skipping_plain_lines

UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
REPLACEMENT_CHAR = "\ufffd"

# C0 and C1 controls (tab and newline excepted), DEL, and invisible characters that carry no meaning:
# zero-width space, word joiner, byte order mark. The zero-width (non-)joiners U+200C/U+200D stay: Persian,
# Indic scripts and emoji sequences need them.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2060\ufeff]")

class TextNormalizer(FTFYFormatter):
    """Normalizes document text; drops (and logs as a bad record) text with too many U+FFFD characters.

    In order: ftfy repairs mojibake with datatrove's settings (its C1 fix reads stray C1 characters as the
    Windows-1252 punctuation they almost always were) and turns \\r\\n, \\r, U+2028/U+2029 into \\n; with
    `skip_plain_lines`, the result is the same but ftfy's fixers skip the lines they would leave unchanged.
    Form feeds (page breaks) become newlines; the remaining control and zero-width characters are removed;
    the text is brought to `unicode_form`. A document with more than `max_replacement_char_ratio` U+FFFD characters
    afterwards is dropped and logged; a document left empty is dropped.
    """

    name = "🧹 Normalize text"

    def __init__(self, config: NormalizeConfig | None = None, bad_records: BadRecordLog | None = None,
                 skip_plain_lines: bool = True):
        config = config or NormalizeConfig()
        if config.unicode_form not in UNICODE_FORMS:
            raise ValueError(f"normalize.unicode_form: {config.unicode_form!r}, expected one of {UNICODE_FORMS}")
        super().__init__(fix_line_breaks=True)
        self.unicode_form = config.unicode_form
        self.max_replacement_char_ratio = config.max_replacement_char_ratio
        self.bad_records = bad_records or BadRecordLog(None)
        self.skip_plain_lines = skip_plain_lines

    def format(self, text: str) -> str:
        text = fix_text_skipping_plain_lines(text, self.config) if self.skip_plain_lines else super().format(text)
        text = _INVISIBLE.sub("", text.replace("\f", "\n"))
        return unicodedata.normalize(self.unicode_form, text)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.bad_records.start_task(rank)
        for doc in data:
            self.stat_update(StatHints.total, value=1)
            with self.track_time():
                text = self.format(doc.text)
            if text != doc.text:
                self.stat_update("changed")
                doc.text = text
            if not text.strip():
                self.stat_update(StatHints.dropped, "dropped_empty")
                continue
            ratio = text.count(REPLACEMENT_CHAR) / len(text)
            if ratio > self.max_replacement_char_ratio:
                self.stat_update(StatHints.dropped, "dropped_replacement_chars")
                error = (
                    f"{ratio:.2%} of the characters are U+FFFD (limit {self.max_replacement_char_ratio:.2%}): "
                    "probably decoded with the wrong encoding"
                )
                self.bad_records.add(BadRecord("normalize", doc.metadata.get("file", ""), str(doc.id), error), rank)
                continue
            self.stat_update(StatHints.forwarded)
            self.update_doc_stats(doc)
            yield doc
        self.bad_records.close()
