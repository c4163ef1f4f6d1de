"""Documents of a corpus directory laid out like data/sample, as texts, for the component benchmarks and tests.

books/**/*.txt are cut into ~3,000-character documents at paragraph breaks, news/**/*.jsonl[.gz] give their
"text" field, web/**/*.warc[.gz] and *.html give their HTML pages or the main text trafilatura extracts.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import trafilatura
from warcio.archiveiterator import ArchiveIterator

BOOK_CHUNK_CHARS = 3_000


def _files(folder: Path, *suffixes: str) -> list[Path]:
    """The files under `folder` whose names end with one of `suffixes`, following links (bench/corpus is
    made of links into the downloaded packages)."""
    found = [Path(root) / name for root, _, names in os.walk(folder, followlinks=True) for name in names]
    return sorted(path for path in found if path.name.endswith(suffixes))


def paragraph_chunks(text: str, max_chars: int = BOOK_CHUNK_CHARS) -> Iterator[str]:
    current = ""
    for paragraph in text.split("\n\n"):
        if current and len(current) + len(paragraph) > max_chars:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def book_texts(folder: Path) -> Iterator[str]:
    for path in _files(folder, ".txt"):
        yield from paragraph_chunks(path.read_text(encoding="utf-8", errors="replace"))


def news_texts(folder: Path) -> Iterator[str]:
    for path in _files(folder, ".jsonl", ".jsonl.gz"):
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)["text"]


def web_pages(folder: Path, max_bytes: int | None = None) -> Iterator[str]:
    """The HTML of the WARC responses and HTML files under `folder`, the larger than `max_bytes` left out."""

    def pages() -> Iterator[bytes]:
        for path in _files(folder, ".warc", ".warc.gz", ".html", ".htm"):
            if path.name.endswith((".warc", ".warc.gz")):
                with open(path, "rb") as warc:
                    for record in ArchiveIterator(warc):
                        if record.rec_type == "response":
                            yield record.content_stream().read()
            else:
                yield path.read_bytes()

    for html in pages():
        if max_bytes is None or len(html) <= max_bytes:
            yield html.decode("utf-8", "replace")


def web_texts(folder: Path, max_bytes: int | None = None) -> Iterator[str]:
    for page in web_pages(folder, max_bytes):
        text = trafilatura.extract(page, include_comments=False, deduplicate=False)
        if text:
            yield text


def load_texts(docs_dir: Path, limit: int | None) -> list[str]:
    """The documents of `docs_dir`: at most `limit` of each kind."""
    texts = []
    for kind, read in (("books", book_texts), ("news", news_texts), ("web", web_texts)):
        if (docs_dir / kind).is_dir():
            for i, text in enumerate(read(docs_dir / kind)):
                if limit is not None and i >= limit:
                    break
                texts.append(text)
    return texts
