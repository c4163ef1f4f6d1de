"""`SourceReader`, the first step of the pipeline: reads its task's share of the input files, each with the
reader of its format, and never stops on bad input."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from data_pipeline.bad_records import BadRecordLog
from data_pipeline.readers.context import ReadContext
from data_pipeline.readers.jsonl import read_jsonl
from data_pipeline.readers.listing import SourceFile
from data_pipeline.readers.parquet import read_parquet
from data_pipeline.readers.text import read_whole_file
from data_pipeline.readers.warc import read_warc
from shard_format.storage import StorageOptions

READERS: dict[str, Callable[[ReadContext, SourceFile], Iterator[Document]]] = {
    "warc": read_warc,
    "wet": read_warc,
    "html": read_whole_file,
    "text": read_whole_file,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}


class SourceReader(PipelineStep):
    """Reads this task's share of the input files (`files[rank::world_size]`) into Documents.

    Document ids are `{source}/{relpath}#{n}`, n being the record's position in its file (0-based line of a
    JSONL file, record of a WARC file, row of a Parquet file; skipped records count too, so ids do not
    shift when a neighbour is bad), or `{source}/{relpath}` for formats with one document per file.
    HTML is kept raw with `metadata["is_html"] = True`; a later step extracts its text.
    """

    name = "📂 Source reader"
    type = "📖 - READER"

    def __init__(
        self,
        files: Sequence[SourceFile],
        bad_records: BadRecordLog | str | os.PathLike | None = None,
        storage_options: StorageOptions = None,
    ):
        """`bad_records`: the log to report bad input to, or the folder of a new one (None: log only);
        `storage_options`: for files given as URLs."""
        super().__init__()
        self.files = list(files)
        self.storage_options = dict(storage_options or {})
        self.bad_records = bad_records if isinstance(bad_records, BadRecordLog) else BadRecordLog(bad_records)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self.bad_records.start_task(rank)
        ctx = ReadContext(self, self.bad_records, rank, self.storage_options)
        try:
            for file in self.files[rank::world_size]:
                self.stat_update("input_files", value=1)
                logger.info(f"reading {file.path}")
                docs = READERS[file.fmt](ctx, file)
                try:
                    while True:
                        with self.track_time():
                            doc = next(docs, None)
                        if doc is None:
                            break
                        self.stat_update("documents")
                        self.update_doc_stats(doc)
                        yield doc
                except OSError as e:  # vanished since listing, permission denied, I/O error
                    ctx.report(file, "", f"cannot read file: {e}", "bad_unreadable_file")
        finally:
            self.bad_records.close()
