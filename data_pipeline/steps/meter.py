"""A probe between two steps: how many documents and UTF-8 bytes pass this point.

The report puts consecutive probes side by side to give each stage's documents and bytes in/out.
"""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

METER_PREFIX = "meter:"


def utf8_length(text: str) -> int:
    """The UTF-8 size of a text (lone surrogates counted as encoded), without encoding an ASCII one."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class Meter(PipelineStep):
    type = "📏 - METER"

    def __init__(self, point: str):
        self.name = f"{METER_PREFIX}{point}"  # before super().__init__(), which names the stats after it
        super().__init__()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("documents")
            self.stat_update("bytes", value=utf8_length(doc.text), unit="doc")
            yield doc
