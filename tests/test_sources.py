"""Listing and reading input files: formats, ids and metadata, clear config errors, and bad input of every kind."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import random
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data_pipeline.bad_records import read_bad_records
from data_pipeline.config import ConfigError, SourceConfig
from data_pipeline.readers import SourceFile, SourceReader, decode_bytes, detect_format, list_source_files

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
HTML = "<!DOCTYPE html><html><head><title>{0}</title></head><body><p>Page {0} body text.</p></body></html>"


def source(path, name="src", kind="generic", **kwargs) -> SourceConfig:
    paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]
    return SourceConfig(name=name, kind=kind, paths=paths, **kwargs)


def read(tmp_path: Path, *sources: SourceConfig, rank: int = 0, world_size: int = 1):
    """Read the sources like a pipeline task: (documents, bad records logged, the reader for its stats)."""
    bad_folder = tmp_path / "bad_records"
    reader = SourceReader(list_source_files(list(sources)), bad_folder)
    docs = list(reader.run(None, rank=rank, world_size=world_size))
    return docs, read_bad_records(bad_folder), reader


def stat(reader: SourceReader, name: str) -> float:
    return reader.stats[name].total


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def noise(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def jsonl(*objects) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


# ---------------------------------------------------------------------------------------------------------
# WARC helpers


# A record is given as a function that builds it with a writer.


def response(url: str, body: bytes, content_type="text/html; charset=utf-8", status="200 OK"):
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    return lambda w: w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)


def html_page(i: int):
    return response(f"https://example.org/{i}", HTML.format(i).encode())


def request(url: str):
    return lambda w: w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))


def conversion(i: int):
    text = f"Plain text {i}.".encode()
    return lambda w: w.create_warc_record(
        f"https://example.org/{i}", "conversion", payload=io.BytesIO(text), warc_content_type="text/plain"
    )


def warcinfo(w: WARCWriter):
    return w.create_warcinfo_record("test.warc", {"software": "test"})


def write_warc(path: Path, records: list, gzip_records: bool = True) -> list[int]:
    """Write the records; returns where each starts in the uncompressed data, then where the data ends."""
    chunks, offsets, position = [], [], 0
    for make in records:
        buffer = io.BytesIO()
        writer = WARCWriter(buffer, gzip=gzip_records)
        writer.write_record(make(writer))
        chunks.append(buffer.getvalue())
        offsets.append(position)
        position += len(gzip.decompress(chunks[-1]) if gzip_records else chunks[-1])
    write(path, b"".join(chunks))
    return offsets + [position]


# ---------------------------------------------------------------------------------------------------------
# Listing


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.warc", "warc"),
        ("a.warc.gz", "warc"),
        ("CC-MAIN.WARC.GZ", "warc"),
        ("a.wet", "wet"),
        ("a.wet.gz", "wet"),
        ("a.html", "html"),
        ("a.htm", "html"),
        ("a.jsonl", "jsonl"),
        ("a.jsonl.gz", "jsonl"),
        ("a.jsonl.zst", "jsonl"),
        ("c4-train.00000-of-01024.json.gz", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.txt", "text"),
        ("README.md", "text"),
        ("LICENSE", "text"),
        ("a.json", None),
        ("a.csv", None),
        ("a.txt.gz", None),
        ("image.png", None),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt
    assert detect_format(f"some/dir.v2/{name}") == fmt


def test_lists_the_sample_in_source_then_path_order():
    sources = [source(SAMPLE / kind, name=kind, kind=kind) for kind in ("web", "news", "books")]
    files = list_source_files(sources)

    assert [(f.source, f.fmt) for f in files[:2]] == [("web", "warc"), ("news", "jsonl")]
    books = [f for f in files if f.source == "books"]
    assert [f.relpath for f in books] == sorted(p.name for p in (SAMPLE / "books").iterdir())
    assert {f.fmt for f in books} == {"text"}
    assert all(os.path.isabs(f.path) and f.quality_profile == f.kind for f in files)
    assert list_source_files(sources) == files  # deterministic
    reordered = list_source_files(sources[::-1])
    assert [f.source for f in reordered][0] == "books" and reordered[-1].source == "web"


def test_folders_are_read_recursively_skipping_hidden_and_unknown_files(tmp_path):
    for name in ["b.txt", "a/c.jsonl", "a/d/e.html", "notes.csv", ".hidden.txt", ".git/config.txt", "a/.cache/x.txt"]:
        write(tmp_path / "in" / name, "x")
    files = list_source_files([source(tmp_path / "in")])
    assert [(f.relpath, f.fmt) for f in files] == [("a/c.jsonl", "jsonl"), ("a/d/e.html", "html"), ("b.txt", "text")]


def test_globs_and_several_paths(tmp_path):
    for name in ["x/one.jsonl", "x/two.jsonl", "x/sub/three.jsonl", "x/skip.txt", "y/one.jsonl"]:
        write(tmp_path / name, "{}")

    flat = list_source_files([source(tmp_path / "x" / "*.jsonl")])
    assert [f.relpath for f in flat] == ["one.jsonl", "two.jsonl"]
    deep = list_source_files([source(tmp_path / "x" / "**" / "*.jsonl")])
    assert [f.relpath for f in deep] == ["one.jsonl", "sub/three.jsonl", "two.jsonl"]

    # two files named one.jsonl under different paths must not get the same ids
    both = list_source_files([source([tmp_path / "y", tmp_path / "x" / "one.jsonl", tmp_path / "x" / "*.jsonl"])])
    assert [f.relpath for f in both] == ["x/one.jsonl", "x/two.jsonl", "y/one.jsonl"]  # x/one.jsonl listed once


def test_source_settings_are_carried_to_its_files(tmp_path):
    write(tmp_path / "a.jsonl", "{}")
    config = source(tmp_path / "a.jsonl", name="forum", kind="web", quality="strict", text_key="body")
    (file,) = list_source_files([config])
    assert (file.source, file.kind, file.quality_profile, file.relpath, file.text_key) == (
        "forum",
        "web",
        "strict",
        "a.jsonl",
        "body",
    )


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: tmp / "nothing-*.jsonl", "matches nothing"),
        (lambda tmp: write(tmp / "table.csv", "a,b"), "unknown extension"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no readable input files"),
        (lambda tmp: write(tmp / "only-csv" / "a.csv", "a,b").parent, "no readable input files"),
    ],
    ids=["missing path", "glob matching nothing", "unknown extension", "empty folder", "nothing readable"],
)
def test_bad_paths_fail_before_any_work_naming_source_and_path(tmp_path, make_path, message):
    write(tmp_path / "ok.txt", "fine")
    path = make_path(tmp_path)
    sources = [source(tmp_path / "ok.txt", name="good"), source(path, name="broken")]
    with pytest.raises(ConfigError) as err:
        list_source_files(sources)
    assert str(err.value).startswith("sources[1].paths: source 'broken'")
    assert message in str(err.value) and path.name in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# Reading the sample


def test_reads_the_sample(tmp_path):
    sources = [source(SAMPLE / kind, name=kind, kind=kind) for kind in ("web", "news", "books")]
    docs, bad, reader = read(tmp_path, *sources)

    by_source = {name: [d for d in docs if d.metadata["source"] == name] for name in ("web", "news", "books")}
    assert {name: len(group) for name, group in by_source.items()} == {"web": 98, "news": 32, "books": 9}
    assert bad == []
    assert len({d.id for d in docs}) == len(docs)

    web = by_source["web"][0]
    assert web.id == "web/docs-crawl.warc.gz#0"
    assert web.text.lstrip().lower().startswith("<!doctype html")
    assert web.metadata == {
        "source": "web", "kind": "web", "quality_profile": "web", "file": "docs-crawl.warc.gz", "format": "warc",
        "is_html": True, "url": "https://docs.python.org/3.11/tutorial/appendix.html",
        "date": "2024-03-01T12:00:00Z", "warc_record_id": "<urn:uuid:aecc1f86-b22b-4b4b-a08d-f1e100d526aa>",
    }  # fmt: skip
    news = by_source["news"][0]
    assert news.id == "news/sotu-1990-2021.jsonl.gz#0"
    assert news.metadata == {
        "source": "news", "kind": "news", "quality_profile": "news", "file": "sotu-1990-2021.jsonl.gz",
        "format": "jsonl", "is_html": False, "original_id": "sotu-1990-george-bush",
        "title": "State of the Union Address, 1990", "date": "1990-01-01", "author": "George Bush",
    }  # fmt: skip
    book = next(d for d in by_source["books"] if d.metadata["file"] == "moby-dick-gutenberg.txt")
    assert book.id == "books/moby-dick-gutenberg.txt"
    assert not book.metadata["is_html"] and "Call me Ishmael" in book.text
    assert stat(reader, "documents") == 139 and stat(reader, "input_files") == 11


def test_tasks_split_the_files_deterministically(tmp_path):
    sources = [source(SAMPLE / "books", name="books", kind="books"), source(SAMPLE / "news", name="news", kind="news")]
    whole = [d.id for d in read(tmp_path, *sources)[0]]
    shards = [[d.id for d in read(tmp_path / str(rank), *sources, rank=rank, world_size=3)[0]] for rank in range(3)]
    assert sorted(sum(shards, [])) == sorted(whole)
    assert shards == [[d.id for d in read(tmp_path / "again", *sources, rank=r, world_size=3)[0]] for r in range(3)]
    files = list_source_files(sources)
    assert {d.split("#")[0] for d in shards[1]} == {f"{f.source}/{f.relpath}" for f in files[1::3]}


# ---------------------------------------------------------------------------------------------------------
# WARC and WET


def test_warc_keeps_html_responses_only(tmp_path):
    write_warc(
        tmp_path / "crawl.warc.gz",
        [
            warcinfo,
            request("https://example.org/0"),
            html_page(0),
            response("https://example.org/logo.png", b"\x89PNG\r\n\x1a\n", "image/png"),
            response("https://example.org/gone", b"<html>gone</html>", status="404 Not Found"),
            response("https://example.org/x", HTML.format("x").encode(), "application/xhtml+xml"),
        ],
    )
    docs, bad, reader = read(tmp_path, source(tmp_path / "crawl.warc.gz", name="web", kind="web"))

    assert [(d.id, d.metadata["url"]) for d in docs] == [
        ("web/crawl.warc.gz#2", "https://example.org/0"),
        ("web/crawl.warc.gz#5", "https://example.org/x"),
    ]
    assert docs[0].text == HTML.format(0) and all(d.metadata["is_html"] for d in docs)
    assert bad == []
    assert stat(reader, "skipped_records") == 4
    assert stat(reader, "skipped_not_html") == 1 and stat(reader, "skipped_http_status") == 1


def test_warc_payload_type_and_sniffing(tmp_path):
    def record(url: str, body: bytes, http_headers: list, identified: str | None = None):
        headers = StatusAndHeaders("200 OK", http_headers, protocol="HTTP/1.1")
        warc_headers = {"WARC-Identified-Payload-Type": identified} if identified else None
        return lambda w: w.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=headers, warc_headers_dict=warc_headers
        )

    write_warc(
        tmp_path / "cc.warc.gz",
        [
            record("https://a/untyped.html", b"  <!doctype html><html><p>untyped</p></html>", []),
            record("https://a/untyped.json", b'{"not": "html"}', []),
            record(
                "https://a/report.pdf", b"%PDF-1.4 ...", [("Content-Type", "text/html")], identified="application/pdf"
            ),
            record("https://a/page", HTML.format(1).encode(), [("Content-Type", "text/plain")], identified="text/html"),
        ],
    )
    docs, bad, reader = read(tmp_path, source(tmp_path / "cc.warc.gz"))
    assert [d.metadata["url"] for d in docs] == ["https://a/untyped.html", "https://a/page"] and bad == []
    assert stat(reader, "skipped_not_html") == 2


def test_warc_charset_from_http_headers(tmp_path):
    page = "<html><body>Café crème, naïve façade</body></html>"
    write_warc(
        tmp_path / "latin.warc",
        [response("https://example.fr/", page.encode("latin-1"), "text/html; charset=ISO-8859-1")],
        gzip_records=False,
    )
    docs, bad, _ = read(tmp_path, source(tmp_path / "latin.warc"))
    assert [d.text for d in docs] == [page] and bad == []


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.95], ids=["in WARC headers", "in HTTP headers", "in content"])
@pytest.mark.parametrize("compressed", [True, False], ids=["warc.gz", "warc"])
def test_warc_truncated_inside_a_record_keeps_the_complete_records(tmp_path, compressed, cut):
    path = tmp_path / ("crawl.warc.gz" if compressed else "crawl.warc")
    write_warc(path, [html_page(i) for i in range(3)], gzip_records=compressed)
    last_starts_at = path.stat().st_size
    offsets = write_warc(path, [html_page(i) for i in range(4)], gzip_records=compressed)
    size = path.stat().st_size
    write(path, path.read_bytes()[: last_starts_at + int((size - last_starts_at) * cut)])

    docs, bad, reader = read(tmp_path, source(path, name="web"))

    assert [d.metadata["url"] for d in docs] == [f"https://example.org/{i}" for i in range(3)]
    # where the last record starts, or for a .gz the end of what could be decompressed
    (report,) = bad
    assert report.file == str(path) and report.location.startswith("offset ")
    assert offsets[3] <= int(report.location.split()[1]) < offsets[3] + 500
    assert stat(reader, "bad_records") == 1


def test_warc_gzipped_as_a_whole_is_read_too(tmp_path):
    write_warc(tmp_path / "plain.warc", [html_page(i) for i in range(3)], gzip_records=False)
    write(tmp_path / "whole.warc.gz", gzip.compress((tmp_path / "plain.warc").read_bytes()))
    docs, bad, _ = read(tmp_path, source(tmp_path / "whole.warc.gz"))
    assert len(docs) == 3 and bad == []


@pytest.mark.parametrize(
    "compressed, error",
    [(True, "corrupt compressed data, rest of file skipped"), (False, "damaged WARC record, rest of file skipped")],
    ids=["warc.gz", "warc"],
)
def test_warc_garbage_after_the_first_records_is_reported_and_reading_goes_on(tmp_path, compressed, error):
    path = tmp_path / "web" / ("a.warc.gz" if compressed else "a.warc")
    end = write_warc(path, [html_page(0), html_page(1)], gzip_records=compressed)[-1]
    write(path, path.read_bytes() + b"this is not a WARC record\r\n" * 10)
    write_warc(tmp_path / "web" / "b.warc.gz", [html_page(2)])

    docs, bad, _ = read(tmp_path, source(tmp_path / "web"))

    assert [d.metadata["url"] for d in docs] == [f"https://example.org/{i}" for i in range(3)]
    assert [(b.location, b.error.split(":")[0]) for b in bad] == [(f"offset {end}", error)]


def test_wet_conversion_records_are_plain_text(tmp_path):
    write_warc(tmp_path / "crawl.wet.gz", [warcinfo, conversion(0), conversion(1)])
    docs, bad, _ = read(tmp_path, source(tmp_path / "crawl.wet.gz", name="web"))
    assert [(d.id, d.text, d.metadata["is_html"], d.metadata["format"]) for d in docs] == [
        ("web/crawl.wet.gz#1", "Plain text 0.", False, "wet"),
        ("web/crawl.wet.gz#2", "Plain text 1.", False, "wet"),
    ]
    assert docs[0].metadata["url"] == "https://example.org/0" and bad == []


# ---------------------------------------------------------------------------------------------------------
# JSON Lines and Parquet


def test_jsonl_bad_lines_are_reported_and_the_good_ones_kept(tmp_path):
    lines = [
        json.dumps({"id": 7, "text": "first", "title": "T", "extra": {"nested": 1}}),
        "",  # blank lines are not records
        '{"text": "cut short',
        json.dumps({"id": "no-text"}),
        json.dumps({"text": ["not", "a", "string"]}),
        json.dumps(["an", "array"]),
        json.dumps({"text": "   "}),
        json.dumps({"text": "last"}),
    ]
    write(tmp_path / "d.jsonl", "\n".join(lines))  # no newline after the last line

    docs, bad, reader = read(tmp_path, source(tmp_path / "d.jsonl", name="news"))

    assert [(d.id, d.text) for d in docs] == [("news/d.jsonl#0", "first"), ("news/d.jsonl#7", "last")]
    assert docs[0].metadata["original_id"] == "7" and docs[0].metadata["title"] == "T"
    assert "extra" not in docs[0].metadata
    assert [b.location for b in bad] == ["line 3", "line 4", "line 5", "line 6"]
    assert bad[0].error.startswith("malformed JSON") and "missing" in bad[1].error and "list" in bad[2].error
    assert stat(reader, "bad_records") == 4 and stat(reader, "empty_documents") == 1


def test_a_binary_file_named_jsonl_is_one_bad_record(tmp_path):
    write(tmp_path / "data.jsonl.gz", gzip.compress(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 40))
    docs, bad, _ = read(tmp_path, source(tmp_path / "data.jsonl.gz"))
    assert docs == [] and [(b.location, b.error.split(" (")[0]) for b in bad] == [("", "binary file")]


def test_jsonl_text_and_id_keys_come_from_the_source(tmp_path):
    write(tmp_path / "d.jsonl", jsonl({"body": "hello", "doc_id": "a1", "text": "not this"}))
    docs, _, _ = read(tmp_path, source(tmp_path / "d.jsonl", text_key="body", id_key="doc_id"))
    assert [(d.text, d.metadata["original_id"]) for d in docs] == [("hello", "a1")]


def test_gzip_with_garbage_after_the_first_lines(tmp_path):
    good = gzip.compress(jsonl(*({"text": f"line {i}"} for i in range(3))))
    path = write(tmp_path / "d.jsonl.gz", good + noise(500))
    write(tmp_path / "e.jsonl", jsonl({"text": "next file"}))

    docs, bad, _ = read(tmp_path, source([path, tmp_path / "e.jsonl"]))

    assert [d.text for d in docs] == ["line 0", "line 1", "line 2", "next file"]
    assert [(b.file, b.location) for b in bad] == [(str(path), "line 4")]
    assert bad[0].error.startswith("corrupt compressed data, rest of file skipped")


def test_gzip_corrupt_in_the_middle_keeps_the_lines_before(tmp_path):
    compressed = gzip.compress(jsonl(*({"text": f"line {i} " + "x" * (i % 50)} for i in range(20_000))))
    middle = len(compressed) // 2
    write(tmp_path / "d.jsonl.gz", compressed[:middle] + bytes(b ^ 0x5A for b in compressed[middle:]))

    docs, bad, _ = read(tmp_path, source(tmp_path / "d.jsonl.gz"))

    # deflate decodes some garbage before it notices: those lines are reported as malformed, not kept
    assert 0 < len(docs) < 20_000
    assert [d.text for d in docs[:5000]] == [f"line {i} " + "x" * (i % 50) for i in range(5000)]
    assert bad[-1].error.startswith("corrupt compressed data, rest of file skipped")
    assert int(bad[-1].location.split()[1]) > len(docs)


def test_gzip_truncated(tmp_path):
    compressed = gzip.compress(jsonl(*({"text": f"line {i}"} for i in range(5000))))
    write(tmp_path / "d.jsonl.gz", compressed[: len(compressed) * 3 // 4])
    docs, bad, _ = read(tmp_path, source(tmp_path / "d.jsonl.gz"))
    assert 0 < len(docs) < 5000 and len(bad) == 1 and "EOFError" in bad[0].error


def test_zstd_multi_frame_and_truncated(tmp_path):
    lines = [jsonl({"text": f"line {i}"}) for i in range(3000)]
    compressor = zstandard.ZstdCompressor()
    frames = compressor.compress(b"".join(lines[:1000])) + compressor.compress(b"".join(lines[1000:]))
    write(tmp_path / "ok" / "d.jsonl.zst", frames)
    write(tmp_path / "cut" / "d.jsonl.zst", frames[:-10])

    docs, bad, _ = read(tmp_path / "ok", source(tmp_path / "ok"))
    assert len(docs) == 3000 and bad == []

    docs, bad, _ = read(tmp_path / "cut", source(tmp_path / "cut"))
    assert len(docs) >= 1000 and len(bad) == 1  # the first frame survives; the end is reported, not lost silently
    assert "zstd data ended in the middle of a frame" in bad[0].error


def test_jsonl_invalid_utf8_is_repaired_and_reported(tmp_path):
    write(tmp_path / "d.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9 \xff here"}\n')
    docs, bad, reader = read(tmp_path, source(tmp_path / "d.jsonl"))
    assert [d.text for d in docs] == ["ok", "caf\ufffd \ufffd here"]
    assert [(b.location, b.error.split(":")[0]) for b in bad] == [("line 2", "invalid utf-8 repaired")]
    assert stat(reader, "repaired_invalid_utf8") == 1 and stat(reader, "bad_records") == 0


def test_parquet(tmp_path):
    table = pa.table({
        "id": ["a", "b", "c"],
        "text": ["first", None, "third"],
        "date": ["2020-01-01", "2021-01-01", "2022-01-01"],
        "embedding": [[1.0], [2.0], [3.0]],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "no-text-column.parquet")
    write(tmp_path / "broken.parquet", b"PAR1 this is not parquet")

    docs, bad, _ = read(tmp_path, source(tmp_path / "*.parquet", name="pq"))

    assert [(d.id, d.text, d.metadata["original_id"], d.metadata["date"]) for d in docs] == [
        ("pq/t.parquet#0", "first", "a", "2020-01-01"),
        ("pq/t.parquet#2", "third", "c", "2022-01-01"),
    ]
    assert "embedding" not in docs[0].metadata and docs[0].metadata["format"] == "parquet"
    by_file = {Path(b.file).name: b for b in bad}
    assert by_file["t.parquet"].location == "row 1"
    assert "no column 'text'" in by_file["no-text-column.parquet"].error
    assert "not a readable Parquet file" in by_file["broken.parquet"].error


# ---------------------------------------------------------------------------------------------------------
# Plain text and HTML files


def test_text_folder_with_binary_empty_and_invalid_utf8_files(tmp_path):
    folder = tmp_path / "books"
    write(folder / "good.txt", "A good book.\n")
    write(folder / "random.txt", noise(4096) + b"\0")
    write(folder / "picture", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + noise(200))
    write(folder / "empty.txt", b"")
    write(folder / "blank.md", b" \n\n\t\n")
    write(folder / "latin1.txt", "Un café, s'il vous plaît.".encode("latin-1"))
    write(folder / "bom.txt", "\ufeffWith a byte order mark.".encode())
    write(folder / "utf16.txt", "Little-endian UTF-16.".encode("utf-16"))

    docs, bad, reader = read(tmp_path, source(folder, name="books", kind="books"))

    assert {d.metadata["file"]: d.text for d in docs} == {
        "bom.txt": "With a byte order mark.",
        "good.txt": "A good book.\n",
        "latin1.txt": "Un caf\ufffd, s'il vous pla\ufffdt.",
        "utf16.txt": "Little-endian UTF-16.",
    }
    assert sorted((Path(b.file).name, b.location, b.error.split(" (")[0]) for b in bad) == [
        ("latin1.txt", "offset 6", "invalid utf-8 repaired: undecodable bytes replaced by U+FFFD"),
        ("picture", "", "binary file"),
        ("random.txt", "", "binary file"),
    ]
    assert stat(reader, "empty_files") == 2 and stat(reader, "bad_binary_file") == 2
    assert stat(reader, "bad_records") == 2  # the repaired file is kept, not counted as dropped


def test_html_files_are_kept_raw(tmp_path):
    page = "<html><head><meta charset='windows-1252'></head><body>Voilà déjà l'été à Noël.</body></html>"
    write(tmp_path / "site" / "fr" / "index.htm", page.encode("cp1252"))
    docs, bad, _ = read(tmp_path, source(tmp_path / "site", name="site", kind="web"))
    assert [(d.id, d.metadata["is_html"], d.metadata["format"]) for d in docs] == [("site/fr/index.htm", True, "html")]
    assert docs[0].text == page and bad == []  # decoded as its <meta> says, nothing replaced


def test_a_50_mb_document_is_read_whole_without_copies(tmp_path):
    size = 50 * 1024 * 1024
    line = b"Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.\n"
    path = write(tmp_path / "big.txt", line * (size // len(line)))

    tracemalloc.start()
    try:
        docs, bad, _ = read(tmp_path, source(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert len(docs) == 1 and len(docs[0].text) == path.stat().st_size and bad == []
    assert peak < 2.5 * size  # the file's bytes and its text, not more


def test_a_file_that_disappears_after_listing_is_reported(tmp_path):
    write(tmp_path / "a.txt", "first")
    write(tmp_path / "b.txt", "second")
    files = list_source_files([source(tmp_path)])
    (tmp_path / "a.txt").unlink()

    reader = SourceReader(files, tmp_path / "bad")
    docs = list(reader.run(None, rank=0, world_size=1))

    assert [d.text for d in docs] == ["second"]
    assert [b.error.split(":")[0] for b in read_bad_records(tmp_path / "bad")] == ["cannot read file"]


def test_a_rerun_task_replaces_its_bad_record_log(tmp_path):
    write(tmp_path / "d.jsonl", "not json\n")
    files = list_source_files([source(tmp_path / "d.jsonl")])
    for _ in range(2):
        list(SourceReader(files, tmp_path / "bad").run(None, rank=0, world_size=1))
    assert [(b.step, b.file, b.location) for b in read_bad_records(tmp_path / "bad")] == [
        ("read", files[0].path, "line 1")
    ]


def test_the_reader_survives_pickling(tmp_path):  # datatrove ships steps to its workers pickled
    write(tmp_path / "a.txt", "text")
    reader = SourceReader(list_source_files([source(tmp_path)]), tmp_path / "bad")
    clone = pickle.loads(pickle.dumps(reader))
    assert [d.text for d in clone.run(None, 0, 1)] == ["text"]
    assert isinstance(clone.files[0], SourceFile)


def test_decode_bytes():
    assert decode_bytes(b"plain") == ("plain", None)
    assert decode_bytes("\ufeffwith BOM".encode()) == ("with BOM", None)
    assert decode_bytes(b"a\xffb") == ("a\ufffdb", 1)
    # HTML: UTF-8 when it is valid, whatever is declared; else the declared charset, the <meta> one, a guess
    assert decode_bytes("é".encode(), html=True, declared="latin-1") == ("é", None)
    assert decode_bytes("é".encode("latin-1"), html=True, declared="latin-1") == ("é", None)
    page = "<html><head><meta http-equiv='Content-Type' content='text/html; charset=windows-1252'>€ à</head></html>"
    assert decode_bytes(page.encode("cp1252"), html=True, declared="no-such-charset") == (page, None)
