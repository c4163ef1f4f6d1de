"""List the input files of the configured sources and read them into datatrove Documents.

`list_source_files` resolves every source's paths (files, folders, globs) before any work starts, so a
typo in a path fails at once with a `ConfigError` instead of hours later. `SourceReader` is the first step
of the pipeline: it reads its task's share of those files and never stops on bad input. Each bad record
is counted, logged to the bad-record log with where it was found, and reading goes on with the next
record or file.

Formats, detected by extension:
    .warc .warc.gz                     WARC: `response` records with an HTML payload, kept as raw HTML
    .wet .wet.gz                       WET: `conversion` records, plain text
    .html .htm                         one HTML document per file
    .jsonl .jsonl.gz .jsonl.zst .json.gz   JSON Lines, one document per line
    .parquet                           one document per row
    .txt .md, or no extension          plain text, one document per file
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import glob
import gzip
import io
import itertools
import os
import posixpath
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import zstandard
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from data_pipeline import storage
from data_pipeline.bad_records import BadRecord, BadRecordLog
from data_pipeline.config import ConfigError, SourceConfig
from data_pipeline.storage import StorageOptions

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
    from warcio.recordloader import ArcWarcRecord

# Longest suffixes first: ".jsonl.gz" must win over a shorter match.
FORMAT_BY_SUFFIX = {
    ".warc.gz": "warc",
    ".warc": "warc",
    ".wet.gz": "wet",
    ".wet": "wet",
    ".html": "html",
    ".htm": "html",
    ".jsonl.gz": "jsonl",
    ".jsonl.zst": "jsonl",
    ".jsonl": "jsonl",
    ".json.gz": "jsonl",  # the C4 / Dolma convention: gzipped JSON Lines
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
}

HTML_MIME_TYPES = ("text/html", "application/xhtml+xml")
# JSONL / Parquet fields worth carrying into the metadata, besides the original id
ORIGINAL_FIELDS = ("url", "title", "date", "author")
BINARY_SNIFF_BYTES = 8192
HTML_HEAD_BYTES = 16384  # where to look for <meta charset>
PARQUET_BATCH_ROWS = 256
_READ_CHUNK = 1 << 20
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# what reading a damaged .gz or .zst raises (BadGzipFile is an OSError)
_DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-z0-9_:.-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class SourceFile:
    """One input file, with everything needed to read it and to name its documents."""

    source: str  # the source's name
    kind: str  # web | news | books | generic
    quality_profile: str
    path: str  # absolute
    relpath: str  # relative to the path given in the config: the readable part of document ids
    fmt: str  # warc | wet | html | jsonl | parquet | text
    text_key: str = "text"  # JSONL / Parquet only
    id_key: str = "id"


def detect_format(path: str | os.PathLike) -> str | None:
    """The format of a file from its name, or None for an extension we do not read."""
    name = os.path.basename(path).lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    return "text" if "." not in name else None


# ---------------------------------------------------------------------------------------------------------
# Listing


def list_source_files(sources: Sequence[SourceConfig], storage_options: StorageOptions = None) -> list[SourceFile]:
    """Every readable input file, in source order then path order; raises ConfigError on bad paths.

    A source's paths may be local paths or fsspec URLs (`s3://bucket/prefix/*.jsonl.gz`), all on one
    filesystem; URLs are listed with `storage_options`."""
    files: list[SourceFile] = []
    for i, source in enumerate(sources):
        files.extend(_list_source(i, source, storage_options))
    return files


def _list_source(index: int, source: SourceConfig, storage_options: StorageOptions) -> list[SourceFile]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"sources[{index}].paths: source {source.name!r}: {message}")

    try:
        tree = _tree_of(source.paths, storage_options)
    except ValueError as e:  # mixed filesystems, or a protocol whose package is missing (StorageError)
        raise fail(str(e)) from e
    bases: list[str] = []
    found: dict[str, str] = {}  # absolute path -> format; a file reached twice is read once
    for given in source.paths:
        path = tree.path_of(given)
        shown = tree.display(path)
        try:
            if _has_magic(path):
                base = _glob_base(path)
                matches = tree.glob(path)
                if not matches:
                    raise fail(f"glob {shown!r} matches nothing")
                candidates = [f for match, is_dir in matches for f in (tree.walk(match) if is_dir else [match])]
            elif (kind := tree.kind(path)) == "directory":
                base, candidates = path, list(tree.walk(path))
            elif kind == "file":
                if detect_format(path) is None:
                    raise fail(f"{shown!r} has an unknown extension; readable: {', '.join(FORMAT_BY_SUFFIX)} or none")
                base, candidates = tree.dirname(path), [path]
            else:
                raise fail(f"{shown!r} does not exist")
        except ConfigError:
            raise
        except Exception as e:  # a remote filesystem: no such bucket, no permission, no credentials, no network
            raise fail(f"cannot list {shown!r}: {type(e).__name__}: {e}") from e
        bases.append(tree.absolute(base))
        for candidate in candidates:
            fmt = detect_format(candidate)
            if fmt is None:
                logger.info(f"source {source.name!r}: skipping {candidate} (unknown extension)")
                continue
            found.setdefault(tree.absolute(candidate), fmt)

    if not found:
        raise fail(f"no readable input files in {list(source.paths)}")
    # With several paths, ids are relative to their common folder, so that two files of the same name
    # under different paths still get different ids.
    root = tree.commonpath(bases)
    return [
        SourceFile(
            source=source.name,
            kind=source.kind,
            quality_profile=source.quality or source.kind,
            path=tree.display(path),
            relpath=tree.relpath(path, root),
            fmt=fmt,
            text_key=source.text_key,
            id_key=source.id_key,
        )
        for path, fmt in sorted(found.items())
    ]


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: `data/*/x.jsonl` -> `data`."""
    parts = Path(pattern).parts
    static = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        static.append(part)
    return str(Path(*static)) if static else "."


def _tree_of(paths: Sequence[str], storage_options: StorageOptions) -> _LocalTree | _RemoteTree:
    """Where a source's files are: the local filesystem, or the one remote filesystem all its URLs are on."""
    protocols = {storage.protocol_of(p) if storage.is_remote(p) else None for p in paths}
    if len(protocols) > 1:
        raise ValueError(f"mixes local paths and URLs of different filesystems: {list(paths)}")
    if protocols <= {None}:
        return _LocalTree()
    fs, _ = storage.resolve(paths[0], storage_options)
    return _RemoteTree(fs, storage_options)


class _LocalTree:
    """Local (and shared POSIX) paths, through os and glob; ids are relative to the given paths."""

    @staticmethod
    def path_of(given: str) -> str:
        return os.path.expanduser(storage.local_path(given))

    @staticmethod
    def glob(pattern: str) -> list[tuple[str, bool]]:
        return [(match, os.path.isdir(match)) for match in sorted(glob.glob(pattern, recursive=True))]

    @staticmethod
    def kind(path: str) -> str | None:
        return "directory" if os.path.isdir(path) else "file" if os.path.isfile(path) else None

    @staticmethod
    def walk(folder: str) -> Iterator[str]:
        """Files under `folder`, recursively, leaving out hidden files and folders."""
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):  # data folders are often links
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith("."):
                    yield os.path.join(dirpath, name)

    @staticmethod
    def dirname(path: str) -> str:
        return os.path.dirname(path) or "."

    absolute = staticmethod(os.path.abspath)
    commonpath = staticmethod(os.path.commonpath)

    @staticmethod
    def relpath(path: str, root: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    @staticmethod
    def display(path: str) -> str:
        return path


class _RemoteTree:
    """Paths on an fsspec filesystem (`bucket/key`, without the protocol); files are named by their URL.

    Ids are built like local ones, relative to the given paths, so reading a bucket gives the same ids as
    reading a local copy of it."""

    def __init__(self, fs: AbstractFileSystem, storage_options: StorageOptions):
        self.fs, self.storage_options = fs, storage_options

    def path_of(self, given: str) -> str:
        return storage.resolve(given, self.storage_options)[1].rstrip("/")

    def glob(self, pattern: str) -> list[tuple[str, bool]]:
        base = _glob_base(pattern)
        matches = self.fs.glob(pattern, detail=True)
        return [
            (path, info["type"] == "directory")
            for path, info in sorted(matches.items())
            if not _is_hidden(path, base)
        ]

    def kind(self, path: str) -> str | None:
        try:
            return self.fs.info(path)["type"]
        except FileNotFoundError:
            return None

    def walk(self, folder: str) -> Iterator[str]:
        for path in sorted(self.fs.find(folder)):
            if not _is_hidden(path, folder):
                yield path

    @staticmethod
    def dirname(path: str) -> str:
        return posixpath.dirname(path)

    @staticmethod
    def absolute(path: str) -> str:
        return path

    @staticmethod
    def commonpath(bases: list[str]) -> str:
        return posixpath.commonpath(bases)

    @staticmethod
    def relpath(path: str, root: str) -> str:
        return path[len(root):].lstrip("/") if root else path

    def display(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)


def _is_hidden(path: str, base: str) -> bool:
    """Whether a file or folder below `base` on the way to `path` is hidden (its name starts with a dot)."""
    below = path[len(base):] if path.startswith(base) else path
    return any(part.startswith(".") for part in below.split("/"))


# ---------------------------------------------------------------------------------------------------------
# Reading


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
        self._rank = 0

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self._rank = rank
        self.bad_records.start_task(rank)
        readers = {
            "warc": self._read_warc,
            "wet": self._read_warc,
            "html": self._read_whole_file,
            "text": self._read_whole_file,
            "jsonl": self._read_jsonl,
            "parquet": self._read_parquet,
        }
        try:
            for file in self.files[rank::world_size]:
                self.stat_update("input_files", value=1)
                logger.info(f"reading {file.path}")
                docs = readers[file.fmt](file)
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
                    self._report(file, "", f"cannot read file: {e}", "bad_unreadable_file")
        finally:
            self.bad_records.close()

    # -- helpers shared by the formats

    def _report(self, file: SourceFile, location: str, error: str, stat: str, dropped: bool = True) -> None:
        """Count and log a problem; `dropped=False` for input that was repaired and kept."""
        self.stat_update(stat)
        if dropped:
            self.stat_update("bad_records")
        self.bad_records.add(BadRecord(step="read", file=file.path, location=location, error=error), rank=self._rank)

    def _report_repair(self, file: SourceFile, location: str, first_bad_byte: int) -> None:
        self._report(
            file,
            location,
            f"invalid utf-8 repaired: undecodable bytes replaced by U+FFFD (first at byte {first_bad_byte})",
            "repaired_invalid_utf8",
            dropped=False,
        )

    @staticmethod
    def _metadata(file: SourceFile, is_html: bool) -> dict:
        return {
            "source": file.source,
            "kind": file.kind,
            "quality_profile": file.quality_profile,
            "file": file.relpath,
            "format": file.fmt,
            "is_html": is_html,
        }

    # -- one document per file: plain text and HTML

    def _read_whole_file(self, file: SourceFile) -> Iterator[Document]:
        data = storage.read_bytes(file.path, self.storage_options)
        if not data or data.isspace():
            self.stat_update("empty_files")
            return
        if b"\0" in data[:BINARY_SNIFF_BYTES] and not data.startswith(_UTF16_BOMS):
            self._report(file, "", "binary file (NUL bytes in its first 8 KB), skipped", "bad_binary_file")
            return
        is_html = file.fmt == "html"
        text, first_bad = decode_bytes(data, html=is_html)
        del data  # else this generator's frame keeps the bytes alive while the text goes down the pipeline
        if first_bad is not None:
            self._report_repair(file, f"offset {first_bad}", first_bad)
        yield Document(text=text, id=f"{file.source}/{file.relpath}", metadata=self._metadata(file, is_html))

    # -- WARC and WET

    def _read_warc(self, file: SourceFile) -> Iterator[Document]:
        """WARC and WET files. Offsets in reports are in the decompressed data: like datatrove's WarcReader, we
        decompress .gz files ourselves, as warcio alone rejects a WARC gzipped as a whole instead of per record."""
        from warcio.archiveiterator import ArchiveIterator

        with _open_decompressed(file.path, self.storage_options) as stream:
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
                except _DECOMPRESSION_ERRORS as e:
                    self._report(
                        file,
                        f"offset {archive.fh.tell()}",  # the end of what could be decompressed
                        f"corrupt compressed data, rest of file skipped: {type(e).__name__}: {e}",
                        "bad_corrupt_stream",
                    )
                    return
                except Exception as e:  # warcio raises assorted types on records it cannot parse
                    self._report(
                        file,
                        f"offset {archive.offset}",
                        f"damaged WARC record, rest of file skipped: {type(e).__name__}: {e}",
                        "bad_warc_record",
                    )
                    return
                if skip:
                    self.stat_update("skipped_records", f"skipped_{skip}")
                    continue
                if missing:
                    self._report(
                        file,
                        f"offset {offset}",
                        f"truncated record: {missing} bytes of its content are missing",
                        "bad_truncated_record",
                    )
                    continue
                doc = self._warc_document(file, record, payload, n, offset)
                if doc is not None:
                    yield doc
            # warcio ends without a word when the data stops inside a record's headers
            if archive.fh.tell() > archive.offset:
                self._report(
                    file,
                    f"offset {archive.offset}",
                    "truncated record: the data ends inside its headers",
                    "bad_truncated_record",
                )

    def _warc_document(
        self, file: SourceFile, record: ArcWarcRecord, payload: bytes, n: int, offset: int
    ) -> Document | None:
        is_html = record.rec_type == "response"
        mime, charset = _payload_mime(record)
        if is_html and mime is None and not _looks_like_html(payload):
            self.stat_update("skipped_records", "skipped_not_html")
            return None
        if not payload.strip():
            self.stat_update("empty_documents")
            return None
        text, first_bad = decode_bytes(payload, html=is_html, declared=charset)
        if first_bad is not None:
            self._report_repair(file, f"offset {offset}", first_bad)
        metadata = self._metadata(file, is_html)
        for key, header in (("url", "WARC-Target-URI"), ("date", "WARC-Date"), ("warc_record_id", "WARC-Record-ID")):
            if value := record.rec_headers.get_header(header):
                metadata[key] = value
        return Document(text=text, id=f"{file.source}/{file.relpath}#{n}", metadata=metadata)

    # -- JSON Lines

    def _read_jsonl(self, file: SourceFile) -> Iterator[Document]:
        with _open_decompressed(file.path, self.storage_options) as fh:
            try:
                head = fh.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]
            except _DECOMPRESSION_ERRORS:
                head = b""  # reported with its line number below
            if b"\0" in head:  # JSON text never holds a raw NUL; better one report than one per "line"
                self._report(file, "", "binary file (NUL bytes in its first 8 KB), skipped", "bad_binary_file")
                return
            lineno = 0
            while True:
                try:
                    line = fh.readline()
                except _DECOMPRESSION_ERRORS as e:
                    self._report(
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
                doc = self._jsonl_document(file, line, lineno)
                if doc is not None:
                    yield doc

    def _jsonl_document(self, file: SourceFile, line: bytes, lineno: int) -> Document | None:
        location = f"line {lineno}"
        text, first_bad = decode_bytes(line)
        try:
            fields = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            self._report(file, location, f"malformed JSON: {e}", "bad_malformed_json")
            return None
        if not isinstance(fields, dict):
            self._report(file, location, f"not a JSON object but a {type(fields).__name__}", "bad_malformed_json")
            return None
        doc = self._document_from_fields(file, fields, lineno - 1, location)
        if doc is not None and first_bad is not None:
            self._report_repair(file, location, first_bad)
        return doc

    def _document_from_fields(self, file: SourceFile, fields: dict, n: int, location: str) -> Document | None:
        """A Document from one JSONL object or Parquet row; None (reported or counted) when it has no text."""
        text = fields.get(file.text_key)
        if not isinstance(text, str):
            problem = "missing or null" if text is None else f"a {type(text).__name__}, not a string"
            self._report(file, location, f"text field {file.text_key!r} is {problem}", "bad_missing_text")
            return None
        if not text or text.isspace():
            self.stat_update("empty_documents")
            return None
        metadata = self._metadata(file, is_html=False)
        if (original_id := fields.get(file.id_key)) is not None:
            metadata["original_id"] = str(original_id)
        for key in ORIGINAL_FIELDS:
            value = fields.get(key)
            if isinstance(value, (datetime.date, datetime.datetime)):
                value = value.isoformat()
            if isinstance(value, (str, int, float, bool)):
                metadata[key] = value
        return Document(text=text, id=f"{file.source}/{file.relpath}#{n}", metadata=metadata)

    # -- Parquet

    def _read_parquet(self, file: SourceFile) -> Iterator[Document]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # a local file by name, as pyarrow reads it fastest; a remote one through its (seekable) stream
        source = storage.open_binary(file.path, self.storage_options) if storage.is_remote(file.path) else file.path
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as e:
            self._report(file, "", f"not a readable Parquet file: {e}", "bad_unreadable_file")
            if not isinstance(source, str):
                source.close()
            return
        with parquet, contextlib.nullcontext() if isinstance(source, str) else source:
            names = parquet.schema_arrow.names
            if file.text_key not in names:
                self._report(file, "", f"no column {file.text_key!r} (columns: {names})", "bad_missing_text")
                return
            wanted = dict.fromkeys([file.text_key, file.id_key, *ORIGINAL_FIELDS])
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[c for c in wanted if c in names])
            row = 0
            while True:
                try:
                    batch = next(batches, None)
                except (pa.ArrowException, OSError) as e:
                    self._report(
                        file, f"row {row}", f"corrupt Parquet data, rest of file skipped: {e}", "bad_corrupt_stream"
                    )
                    return
                if batch is None:
                    return
                for fields in batch.to_pylist():
                    doc = self._document_from_fields(file, fields, row, f"row {row}")
                    row += 1
                    if doc is not None:
                        yield doc


# ---------------------------------------------------------------------------------------------------------
# Bytes to text


def decode_bytes(data: bytes, html: bool = False, declared: str | None = None) -> tuple[str, int | None]:
    """Decode input bytes; returns the text and, when undecodable bytes had to be replaced by U+FFFD, the
    offset of the first one (else None).

    UTF-8 comes first (a BOM is dropped): text in another charset almost never passes for valid UTF-8, while
    declared charsets are often wrong. HTML then tries the charset its headers (`declared`) or its `<meta>`
    tag name, then the one cchardet guesses, like browsers and datatrove's WarcReader. Anything else has its
    undecodable bytes replaced.
    """
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        first_bad = e.start
    if html:
        for charset in _html_charsets(data, declared):
            codec = _codec_name(charset)
            if codec and codec != "utf-8":
                try:
                    return data.decode(codec), None
                except UnicodeDecodeError:
                    pass
    return data.decode("utf-8-sig", errors="replace"), first_bad


def _html_charsets(data: bytes, declared: str | None) -> Iterator[str | None]:
    yield declared
    if match := _META_CHARSET.search(data, 0, HTML_HEAD_BYTES):
        yield match.group(1).decode("ascii")
    import cchardet

    yield cchardet.detect(data)["encoding"]


def _codec_name(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


# ---------------------------------------------------------------------------------------------------------
# WARC records


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


# ---------------------------------------------------------------------------------------------------------
# Compressed streams


def _open_decompressed(path: str, storage_options: StorageOptions = None) -> io.BufferedIOBase:
    """A binary stream of the file's content (local or a URL, streamed), decompressed according to its
    extension; closing it closes the file."""
    stream = storage.open_binary(path, storage_options)
    if path.endswith(".gz"):
        return _GzipStream(stream)
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(stream), buffer_size=_READ_CHUNK)
    return stream


class _GzipStream(gzip.GzipFile):
    """Decompresses a stream and closes it with itself (a GzipFile given a stream leaves it open)."""

    def __init__(self, stream: io.BufferedIOBase):
        super().__init__(fileobj=stream, mode="rb")
        self._stream = stream

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stream.close()


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


class _ZstdReader(io.RawIOBase):
    """Decompresses a zstd file of one or more frames, raising EOFError when the file ends inside a frame.

    zstandard's own `stream_reader` just returns a short read on a truncated file, which would lose the end
    of a file without a word.
    """

    def __init__(self, stream: io.BufferedIOBase):
        self._file = stream
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._inside_frame = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._file.read(_READ_CHUNK)
            if not chunk:
                if self._inside_frame:
                    raise EOFError("zstd data ended in the middle of a frame")
                return 0
            self._pending = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._inside_frame = True
            out.append(self._frame.decompress(chunk))
            if not self._frame.eof:
                break
            chunk = self._frame.unused_data  # the start of the next frame, if any
            self._frame = self._decompressor.decompressobj()
            self._inside_frame = False
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()
