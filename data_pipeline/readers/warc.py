"""WARC (.warc, .warc.gz): HTML `response` records, kept raw; WET (.wet, .wet.gz): `conversion` records, text."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from datatrove.data import Document

from data_pipeline.readers.compression import DECOMPRESSION_ERRORS, open_decompressed
from data_pipeline.readers.context import ReadContext, document_metadata
from data_pipeline.readers.decoding import decode_bytes
from data_pipeline.readers.listing import SourceFile

if TYPE_CHECKING:
    import io

    from warcio.recordloader import ArcWarcRecord

HTML_MIME_TYPES = ("text/html", "application/xhtml+xml")


def read_warc(ctx: ReadContext, file: SourceFile) -> Iterator[Document]:
    """WARC and WET files. Offsets in reports are in the decompressed data: like datatrove's WarcReader, we
    decompress .gz files ourselves, as warcio alone rejects a WARC gzipped as a whole instead of per record."""
    from warcio.archiveiterator import ArchiveIterator

    with open_decompressed(file.path, ctx.storage_options) as stream:
        archive = ArchiveIterator(_ShortReads(stream))
        records = iter(archive)
        for n in itertools.count():
            # After an error warcio's iterator cannot go on: the rest of the file is lost.
            try:
                record = next(records, None)
                if record is None:
                    break
                offset = archive.offset
                skip = _warc_skip_reason(record)
                payload = b"" if skip else record.content_stream().read()
                missing = 0 if skip else record.raw_stream.limit
            except DECOMPRESSION_ERRORS as e:
                ctx.report(
                    file,
                    f"offset {archive.fh.tell()}",  # the end of what could be decompressed
                    f"corrupt compressed data, rest of file skipped: {type(e).__name__}: {e}",
                    "bad_corrupt_stream",
                )
                return
            except Exception as e:  # warcio raises assorted types on records it cannot parse
                ctx.report(
                    file,
                    f"offset {archive.offset}",
                    f"damaged WARC record, rest of file skipped: {type(e).__name__}: {e}",
                    "bad_warc_record",
                )
                return
            if skip:
                ctx.count("skipped_records", f"skipped_{skip}")
                continue
            if missing:
                ctx.report(
                    file,
                    f"offset {offset}",
                    f"truncated record: {missing} bytes of its content are missing",
                    "bad_truncated_record",
                )
                continue
            doc = _warc_document(ctx, file, record, payload, n, offset)
            if doc is not None:
                yield doc
        # warcio ends without a word when the data stops inside a record's headers
        if archive.fh.tell() > archive.offset:
            ctx.report(
                file,
                f"offset {archive.offset}",
                "truncated record: the data ends inside its headers",
                "bad_truncated_record",
            )

def _warc_document(
    ctx: ReadContext, file: SourceFile, record: ArcWarcRecord, payload: bytes, n: int, offset: int
) -> Document | None:
    is_html = record.rec_type == "response"
    mime, charset = _payload_mime(record)
    if is_html and mime is None and not _looks_like_html(payload):
        ctx.count("skipped_records", "skipped_not_html")
        return None
    if not payload.strip():
        ctx.count("empty_documents")
        return None
    text, first_bad = decode_bytes(payload, html=is_html, declared=charset)
    if first_bad is not None:
        ctx.report_repair(file, f"offset {offset}", first_bad)
    metadata = document_metadata(file, is_html)
    for key, header in (("url", "WARC-Target-URI"), ("date", "WARC-Date"), ("warc_record_id", "WARC-Record-ID")):
        if value := record.rec_headers.get_header(header):
            metadata[key] = value
    return Document(text=text, id=f"{file.source}/{file.relpath}#{n}", metadata=metadata)


def _payload_mime(record: ArcWarcRecord) -> tuple[str | None, str | None]:
    """(mime type, charset) of a record's payload, from its headers; None for what they do not say."""
    headers = record.http_headers if record.http_headers is not None else record.rec_headers
    mime, charset = _parse_content_type(headers.get_header("Content-Type"))
    # the type the crawler identified by sniffing beats what the server claimed
    identified = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    if identified:
        mime = _parse_content_type(identified)[0]
    return mime, charset


def _parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    mime, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return mime.strip().lower() or None, charset


def _warc_skip_reason(record: ArcWarcRecord) -> str | None:
    """Why a record is not a document (a stat label), or None for a document: an HTML `response` (WARC) or a
    `conversion` (WET). A response without any content type is kept here and sniffed once read."""
    if record.rec_type == "conversion":
        return None
    if record.rec_type != "response":
        return f"warc_{record.rec_type}"
    if record.http_headers is not None:
        status = record.http_headers.get_statuscode() or ""
        if not status.startswith("2"):  # error pages and redirects
            return "http_status"
    mime = _payload_mime(record)[0]
    if mime is not None and mime not in HTML_MIME_TYPES:
        return "not_html"
    return None


def _looks_like_html(payload: bytes) -> bool:
    head = payload[:1024].lower()
    return b"<html" in head or b"<!doctype html" in head


class _ShortReads:
    """A stream whose `read` returns the data decompressed so far instead of filling the whole request.

    A full `read(n)` that hits a corruption raises and drops the good data it had gathered, so every record
    in the last block before the damage would be lost with it.
    """

    def __init__(self, stream: io.BufferedIOBase):
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read1(size)

    def tell(self) -> int:
        return self._stream.tell()
