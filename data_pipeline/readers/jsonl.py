"""JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst, .json.gz): one document per line."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from datatrove.data import Document

from data_pipeline.readers.compression import DECOMPRESSION_ERRORS, open_decompressed
from data_pipeline.readers.context import ReadContext, document_from_fields
from data_pipeline.readers.decoding import BINARY_SNIFF_BYTES, decode_bytes
from data_pipeline.readers.listing import SourceFile


def read_jsonl(ctx: ReadContext, file: SourceFile) -> Iterator[Document]:
    with open_decompressed(file.path, ctx.storage_options) as fh:
        try:
            head = fh.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]
        except DECOMPRESSION_ERRORS:
            head = b""  # reported with its line number below
        if b"\0" in head:  # JSON text never holds a raw NUL; better one report than one per "line"
            ctx.report(file, "", "binary file (NUL bytes in its first 8 KB), skipped", "bad_binary_file")
            return
        lineno = 0
        while True:
            try:
                line = fh.readline()
            except DECOMPRESSION_ERRORS as e:
                ctx.report(
                    file,
                    f"line {lineno + 1}",
                    f"corrupt compressed data, rest of file skipped: {type(e).__name__}: {e}",
                    "bad_corrupt_stream",
                )
                return
            if not line:
                return
            lineno += 1
            if line.isspace():
                continue
            doc = _jsonl_document(ctx, file, line, lineno)
            if doc is not None:
                yield doc


def _jsonl_document(ctx: ReadContext, file: SourceFile, line: bytes, lineno: int) -> Document | None:
    location = f"line {lineno}"
    text, first_bad = decode_bytes(line)
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        ctx.report(file, location, f"malformed JSON: {e}", "bad_malformed_json")
        return None
    if not isinstance(fields, dict):
        ctx.report(file, location, f"not a JSON object but a {type(fields).__name__}", "bad_malformed_json")
        return None
    doc = document_from_fields(ctx, file, fields, lineno - 1, location)
    if doc is not None and first_bad is not None:
        ctx.report_repair(file, location, first_bad)
    return doc
