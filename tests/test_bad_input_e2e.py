"""Bad input through the whole pipeline: the run completes, every bad record is reported with its
file and place, every good record is kept."""

import gzip
import json
import shutil

import pytest

from .conftest import SAMPLE, read_docs, run_pipeline_cli

pytestmark = pytest.mark.slow

GOOD_NEWS = [json.loads(line) for line in gzip.open(SAMPLE / "news" / "sotu-1990-2021.jsonl.gz", "rt")][:6]


def build_bad_corpus(root):
    web, news, books = root / "web", root / "news", root / "books"
    for folder in (web, news, books):
        folder.mkdir(parents=True)
    shutil.copy(SAMPLE / "web" / "docs-crawl.warc.gz", web / "good.warc.gz")
    warc = gzip.decompress((SAMPLE / "web" / "docs-crawl.warc.gz").read_bytes())
    (web / "truncated.warc").write_bytes(warc[: len(warc) // 40])  # ends inside a record
    (web / "corrupt.warc.gz").write_bytes(gzip.compress(warc[:200_000])[:30_000] + b"\x00garbage" * 1000)

    lines = [json.dumps(r) for r in GOOD_NEWS[:3]]
    lines.insert(1, '{"id": "broken", "text": "unterminated')  # malformed JSON
    lines.insert(2, json.dumps({"id": "no-text", "title": "a record without text"}))
    (news / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    bad_utf8 = json.dumps(GOOD_NEWS[3]).encode().replace(b"Congress", b"Congr\xffss", 1)
    (news / "invalid-utf8.jsonl").write_bytes(bad_utf8 + b"\n")
    gz = gzip.compress(("\n".join(json.dumps(r) for r in GOOD_NEWS[4:]) + "\n").encode() * 3)
    (news / "corrupt.jsonl.gz").write_bytes(gz[: len(gz) // 2] + b"\xde\xad\xbe\xef" * 64)
    (news / "empty.jsonl").write_bytes(b"")

    shutil.copy(SAMPLE / "books" / "persuasion.txt", books / "persuasion.txt")
    (books / "picture.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 64)
    (books / "empty.txt").write_bytes(b"")
    paragraphs = (SAMPLE / "books" / "pride-and-prejudice.txt").read_text().split("\n\n")
    with open(books / "huge.txt", "w") as fh:  # one 50 MB document
        written, i = 0, 0
        while written < 50_000_000:
            chunk = f"{paragraphs[i % len(paragraphs)]} (copy {i})\n\n"
            fh.write(chunk)
            written, i = written + len(chunk), i + 1


def test_bad_input_is_reported_and_good_input_kept(tmp_path, sample_run):
    build_bad_corpus(tmp_path / "in")
    out = tmp_path / "out"
    run_pipeline_cli(out, f"input_dir={tmp_path / 'in'}", "executor.tasks=2",
                     f"tokenizer.path={sample_run / 'tokenizer' / 'tokenizer.json'}")
    report = json.loads((out / "report.json").read_text())
    # the report holds counts and the first few; the per-task files it names hold every record
    records = [json.loads(line) for name in report["bad_records"]["files"] for line in open(out / name)]
    assert report["bad_records"]["sample"] == records[:20]

    def reported(file_name, location_prefix=""):
        return [r for r in records if r["file"].endswith(file_name) and r["location"].startswith(location_prefix)]

    assert reported("truncated.warc", "offset ")
    assert reported("corrupt.warc.gz", "offset ")
    assert reported("mixed.jsonl", "line 2") and reported("mixed.jsonl", "line 3")
    assert reported("invalid-utf8.jsonl", "line 1")
    assert reported("corrupt.jsonl.gz")
    assert reported("picture.txt")
    assert report["bad_records"]["count"] == len(records) >= 7

    read = {d["id"]: d for d in read_docs(out / "work" / "docs" / "clean")}
    flow = {f["stage"]: f for f in report["flow"]}
    # every good record came through reading: 98 pages, 3 + 1 news lines, persuasion and the 50 MB book
    assert flow["read"]["documents_out"] >= 98 + 4 + 2
    assert flow["read"]["bytes_out"] > 50_000_000
    kept_news = {d["metadata"]["original_id"] for d in read.values() if d["metadata"]["kind"] == "news"}
    assert {r["id"] for r in GOOD_NEWS[:4]} <= kept_news
    repaired = next(d for d in read.values() if d["metadata"].get("original_id") == GOOD_NEWS[3]["id"])
    assert "Congr\ufffdss" in repaired["text"]
    assert any(d["metadata"]["file"] == "persuasion.txt" for d in read.values())
    assert (out / "manifest.json").exists()
