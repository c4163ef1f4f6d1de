"""What every format reader gets from the `SourceReader` step running it: where to count events and report
bad input, the storage options of URLs, and the Document fields all formats share."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from data_pipeline.bad_records import BadRecord, BadRecordLog
from data_pipeline.readers.listing import SourceFile

# JSONL / Parquet fields worth carrying into the metadata, besides the original id
ORIGINAL_FIELDS = ("url", "title", "date", "author")


@dataclass
class ReadContext:
    step: PipelineStep  # whose stats the counts go to
    bad_records: BadRecordLog
    rank: int
    storage_options: dict[str, Any]

    def count(self, *labels: str) -> None:
        self.step.stat_update(*labels)

    def report(self, file: SourceFile, location: str, error: str, stat: str, dropped: bool = True) -> None:
        """Count and log a problem; `dropped=False` for input that was repaired and kept."""
        self.count(stat)
        if dropped:
            self.count("bad_records")
        self.bad_records.add(BadRecord(step="read", file=file.path, location=location, error=error), rank=self.rank)

    def report_repair(self, file: SourceFile, location: str, first_bad_byte: int) -> None:
        self.report(
            file,
            location,
            f"invalid utf-8 repaired: undecodable bytes replaced by U+FFFD (first at byte {first_bad_byte})",
            "repaired_invalid_utf8",
            dropped=False,
        )


def document_metadata(file: SourceFile, is_html: bool) -> dict:
    return {
        "source": file.source,
        "kind": file.kind,
        "quality_profile": file.quality_profile,
        "file": file.relpath,
        "format": file.fmt,
        "is_html": is_html,
    }


def document_from_fields(ctx: ReadContext, file: SourceFile, fields: dict, n: int, location: str) -> Document | None:
    """A Document from one JSONL object or Parquet row; None (reported or counted) when it has no text."""
    text = fields.get(file.text_key)
    if not isinstance(text, str):
        problem = "missing or null" if text is None else f"a {type(text).__name__}, not a string"
        ctx.report(file, location, f"text field {file.text_key!r} is {problem}", "bad_missing_text")
        return None
    if not text or text.isspace():
        ctx.count("empty_documents")
        return None
    metadata = document_metadata(file, is_html=False)
    if (original_id := fields.get(file.id_key)) is not None:
        metadata["original_id"] = str(original_id)
    for key in ORIGINAL_FIELDS:
        value = fields.get(key)
        if isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        if isinstance(value, (str, int, float, bool)):
            metadata[key] = value
    return Document(text=text, id=f"{file.source}/{file.relpath}#{n}", metadata=metadata)
