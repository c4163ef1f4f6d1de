"""Strip the Project Gutenberg header and licence footer from books."""

from __future__ import annotations

import re

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

from data_pipeline.config import GutenbergConfig

# A line that closes the header: the START marker ("*** START OF THIS PROJECT GUTENBERG EBOOK X ***",
# "***START OF THE PROJECT GUTENBERG ...") or, in older e-texts, the end of the small print.
_HEADER_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT!)[^\n]*\n?",
    re.IGNORECASE | re.MULTILINE,
)
# The first line of the footer: "*** END OF THIS PROJECT GUTENBERG EBOOK X ***", "End of the Project
# Gutenberg EBook of X", "End of Project Gutenberg's X" (and the "Etext" spellings of older files).
_FOOTER_START = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg(?:'s|\s+E(?:book|text)))",
    re.IGNORECASE | re.MULTILINE,
)
# The transcribers' credit paragraph that follows the START marker ("Produced by Daniel Lazarus and Jonesey").
_CREDITS = re.compile(r"\s*(?:Produced|E-?text prepared|Transcribed) by\b.*?\n\s*\n", re.IGNORECASE | re.DOTALL)


def strip_gutenberg(text: str) -> tuple[str, bool] | None:
    """The book's text without header, credits and footer, and whether a footer was found; None without a header."""
    header = _HEADER_END.search(text)
    if header is None:
        return None
    footer = _FOOTER_START.search(text, header.end())
    body_end = footer.start() if footer else len(text)
    # old e-texts close the small print and then repeat a START line: the body begins after the last marker
    body_start = max(m.end() for m in _HEADER_END.finditer(text, header.start(), body_end))
    body = text[body_start:body_end]
    if credits := _CREDITS.match(body):
        body = body[credits.end():]
    return body.strip(), footer is not None


class GutenbergStripper(PipelineStep):
    """Removes the Project Gutenberg boilerplate from documents of kind "books".

    A book without a Gutenberg header is left unchanged (its text may well mention Project Gutenberg);
    with a header, everything up to the START marker (and the transcribers' credit line after it) and
    everything from the END marker on is removed. Other kinds pass through untouched.

    The config has no knobs beyond `enabled`, which decides whether the pipeline includes this step.
    """

    name = "📚 Gutenberg boilerplate"
    type = "✂️ - FORMAT"

    def __init__(self, config: GutenbergConfig | None = None):
        super().__init__()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total, value=1)
            if doc.metadata.get("kind") != "books":
                yield doc
                continue
            with self.track_time():
                stripped = strip_gutenberg(doc.text)
            if stripped is None:
                self.stat_update("no_header")
                yield doc
                continue
            doc.text, had_footer = stripped
            self.stat_update("stripped_header")
            if had_footer:
                self.stat_update("stripped_footer")
            if not doc.text:
                self.stat_update(StatHints.dropped, "dropped_empty")
                continue
            yield doc
