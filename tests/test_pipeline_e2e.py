"""The whole pipeline on the bundled sample corpus: real outcomes, not just "it ran"."""

import json
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from data_pipeline.dedup import DEDUP_KINDS, iter_audit_rows, normalize_for_hash
from data_pipeline.steps.tokens import chunks
from shard_format.shards import ShardReader, sha256_file

from .conftest import read_docs

pytestmark = pytest.mark.slow


def audit(out: Path) -> list[dict]:
    return [row for kind in DEDUP_KINDS for row in iter_audit_rows(out, kind)]


def names(out: Path, stage: str) -> dict[str, str]:
    """doc id -> url (web) or file (others), for the documents a stage kept."""
    return {d["id"]: d["metadata"].get("url") or d["metadata"]["file"] for d in read_docs(out / "work" / "docs" / stage)}


def final_docs(out: Path) -> list[dict]:
    return read_docs(out / "work" / "docs" / "paragraph")


def final_units(out: Path) -> list[str]:
    """The texts the shards hold: the final documents, long ones cut into chunks."""
    chunk_chars = json.loads((out / "manifest.json").read_text())["config"]["shards"]["chunk_chars"]
    return [text for d in final_docs(out) for _, text in chunks(d["id"], d["text"], chunk_chars)]


def test_byte_identical_handbook_copies_collapse_to_one(sample_run):
    clean, kept = names(sample_run, "clean"), names(sample_run, "paragraph")
    exact = [r for r in audit(sample_run) if r["reason"] == "exact"]
    assert exact, "the untranslated handbook pages are exact copies"
    for row in exact:
        assert "debian-handbook" in clean[row["removed"]] and "/en-US/" in clean[row["kept"]]
        assert row["kept"] in kept and row["removed"] not in kept
    texts = Counter(normalize_for_hash(d["text"]) for d in final_docs(sample_run))
    assert max(texts.values()) == 1


def test_mostly_untranslated_nl_pages_are_near_duplicates_of_en_us(sample_run):
    clean = names(sample_run, "clean")
    near = {clean[r["removed"]]: clean[r["kept"]] for r in audit(sample_run) if r["reason"] == "near"}
    nl_pages = [u for u in clean.values() if "/nl-NL/" in u]
    assert nl_pages, "nl-NL pages pass language ID: they are mostly English"
    for url in nl_pages:
        assert near.get(url) == url.replace("/nl-NL/", "/en-US/"), url
    assert not any("/nl-NL/" in u for u in names(sample_run, "paragraph").values())


def test_shakespeare_modern_and_first_folio_are_both_kept(sample_run):
    kept = set(names(sample_run, "paragraph").values())
    for play in ("hamlet", "macbeth"):
        assert {f"{play}-gut.txt", f"{play}-gut-f.txt"} <= kept


def test_moby_dick_chapter_paragraphs_are_removed_as_repeats(sample_run):
    clean = names(sample_run, "clean")
    rows = {clean[r["removed"]]: r for r in audit(sample_run) if r["reason"] == "paragraph"}
    for chapter in ("moby-dick-chapter-1.txt", "moby-dick-chapter-2.txt"):
        assert rows[chapter]["kept"] and clean[rows[chapter]["kept"]] == "moby-dick-gutenberg.txt"
    book = next(d["text"] for d in final_docs(sample_run) if d["metadata"]["file"] == "moby-dick-gutenberg.txt")
    assert normalize_for_hash("Call me Ishmael. Some years ago--never mind how long precisely") in normalize_for_hash(book)


def test_books_survive_quality_filters_and_lose_their_gutenberg_licence(sample_run):
    books = {d["metadata"]["file"]: d["text"] for d in read_docs(sample_run / "work" / "docs" / "clean") if d["metadata"]["kind"] == "books"}
    assert set(books) == {p.name for p in (Path(__file__).parents[1] / "data/sample/books").glob("*.txt")}
    moby = books["moby-dick-gutenberg.txt"]
    assert moby.startswith("MOBY DICK") and "START OF" not in moby and "Gutenberg-tm" not in moby


def test_documentation_pages_survive(sample_run):
    kept = list(names(sample_run, "paragraph").values())
    assert sum("docs.python.org/3.11/tutorial/" in u for u in kept) >= 12
    assert sum("debian-handbook.info/browse/en-US/" in u for u in kept) >= 8


def test_shards_decode_back_to_the_kept_text(sample_run):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(sample_run / manifest["tokenizer"]["file"]))
    eos = manifest["tokenizer"]["eos_id"]
    decoded = []
    for split in manifest["splits"].values():
        for source in split["sources"].values():
            for shard in source["shards"]:
                for tokens in ShardReader(sample_run / shard["path"]):
                    assert tokens[-1] == eos and eos not in tokens[:-1]
                    decoded.append(tokenizer.decode(tokens[:-1].tolist(), skip_special_tokens=False))
    assert sorted(decoded) == sorted(final_units(sample_run))
    assert len(decoded) > len(final_docs(sample_run)), "the books were cut into chunks"


def test_manifest_counts_match_the_shards(sample_run):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    assert manifest["token_dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 2048
    total_docs = 0
    for split_name, split in manifest["splits"].items():
        for source_name, source in split["sources"].items():
            docs = tokens = 0
            for shard in source["shards"]:
                path = sample_run / shard["path"]
                reader = ShardReader(path)
                assert (reader.num_documents, reader.num_tokens) == (shard["documents"], shard["tokens"])
                assert shard["tokens"] <= 400_000 or shard["documents"] == 1
                assert sha256_file(path) == shard["sha256"]
                assert path.with_suffix(".bin").exists() and path.with_suffix(".idx").exists()  # megatron too
                docs, tokens = docs + shard["documents"], tokens + shard["tokens"]
            assert (docs, tokens) == (source["documents"], source["tokens"])
            total_docs += docs
    assert total_docs == len(final_units(sample_run))
    assert manifest["splits"]["val"]["documents"] >= 1
    assert manifest["versions"]["datatrove"] and manifest["config"]["shards"]["seed"] == 1234


def test_report_accounts_for_every_stage(sample_run):
    report = json.loads((sample_run / "report.json").read_text())
    flow = {f["stage"]: f for f in report["flow"]}
    assert flow["read"]["documents_out"] == 98 + 32 + 9
    for a, b in zip(report["flow"], report["flow"][1:]):
        assert b["documents_in"] == a["documents_out"]
    assert flow["paragraph"]["documents_out"] == len(final_docs(sample_run))
    for kind, point in (("exact", "exact"), ("near", "near")):
        assert report["dedup"][kind]["documents_removed"] == flow[point]["documents_in"] - flow[point]["documents_out"]
    rows = audit(sample_run)
    for kind, summary in report["dedup"].items():
        assert summary["sample"] and summary["sample"] == sorted((r for r in rows if r["reason"] == kind), key=lambda r: r["removed"])[:20]
    assert sum(n for by_profile in report["removed_by_filter"].values() for n in by_profile.values()) == \
        flow["quality"]["documents_in"] - flow["quality"]["documents_out"]
    assert report["bad_records"]["count"] == 0
    assert set(report["tokens"]["train"]) == {"web", "news", "books"}


def shard_texts(out: Path, split: str) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(out / manifest["tokenizer"]["file"]))
    return [tokenizer.decode(doc[:-1].tolist(), skip_special_tokens=False)
            for source in manifest["splits"][split]["sources"].values() for shard in source["shards"]
            for doc in ShardReader(out / shard["path"])]


def test_every_source_has_validation_text_and_no_near_duplicate_of_it_stays_in_train(sample_run):
    def shingles(text):
        words = normalize_for_hash(text).split()
        return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}

    manifest = json.loads((sample_run / "manifest.json").read_text())
    assert set(manifest["splits"]["val"]["sources"]) == {"web", "news", "books"}
    val = [shingles(t) for t in shard_texts(sample_run, "val")]
    train = [shingles(t) for t in shard_texts(sample_run, "train")]
    assert len(val) == manifest["splits"]["val"]["documents"]
    for v in val:
        for t in train:
            assert len(v & t) / max(1, len(v | t)) < 0.5
