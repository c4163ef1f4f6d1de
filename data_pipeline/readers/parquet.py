"""Parquet (.parquet): one document per row, read a batch of rows at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from datatrove.data import Document

from data_pipeline.readers.context import ORIGINAL_FIELDS, ReadContext, document_from_fields
from data_pipeline.readers.listing import SourceFile
from shard_format import storage

PARQUET_BATCH_ROWS = 256


def read_parquet(ctx: ReadContext, file: SourceFile) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a local file by name, as pyarrow reads it fastest; a remote one through its (seekable) stream
    source = storage.open_binary(file.path, ctx.storage_options) if storage.is_remote(file.path) else file.path
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as e:
        ctx.report(file, "", f"not a readable Parquet file: {e}", "bad_unreadable_file")
        if not isinstance(source, str):
            source.close()
        return
    with parquet, contextlib.nullcontext() if isinstance(source, str) else source:
        names = parquet.schema_arrow.names
        if file.text_key not in names:
            ctx.report(file, "", f"no column {file.text_key!r} (columns: {names})", "bad_missing_text")
            return
        wanted = dict.fromkeys([file.text_key, file.id_key, *ORIGINAL_FIELDS])
        batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[c for c in wanted if c in names])
        row = 0
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                ctx.report(file, f"row {row}", f"corrupt Parquet data, rest of file skipped: {e}", "bad_corrupt_stream")
                return
            if batch is None:
                return
            for fields in batch.to_pylist():
                doc = document_from_fields(ctx, file, fields, row, f"row {row}")
                row += 1
                if doc is not None:
                    yield doc
