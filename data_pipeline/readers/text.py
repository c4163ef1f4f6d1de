"""One document per file: plain text (.txt, .md, no extension) and HTML (.html, .htm), kept raw."""

from __future__ import annotations

from collections.abc import Iterator

from datatrove.data import Document

from data_pipeline.readers.context import ReadContext, document_metadata
from data_pipeline.readers.decoding import BINARY_SNIFF_BYTES, UTF16_BOMS, decode_bytes
from data_pipeline.readers.listing import SourceFile
from shard_format import storage


def read_whole_file(ctx: ReadContext, file: SourceFile) -> Iterator[Document]:
    data = storage.read_bytes(file.path, ctx.storage_options)
    if not data or data.isspace():
        ctx.count("empty_files")
        return
    if b"\0" in data[:BINARY_SNIFF_BYTES] and not data.startswith(UTF16_BOMS):
        ctx.report(file, "", "binary file (NUL bytes in its first 8 KB), skipped", "bad_binary_file")
        return
    is_html = file.fmt == "html"
    text, first_bad = decode_bytes(data, html=is_html)
    del data  # else this generator's frame keeps the bytes alive while the text goes down the pipeline
    if first_bad is not None:
        ctx.report_repair(file, f"offset {first_bad}", first_bad)
    yield Document(text=text, id=f"{file.source}/{file.relpath}", metadata=document_metadata(file, is_html))
