"""The shard stage in buckets: the shards depend on the documents and `shards.*`, not on how many tasks
tokenized them; buckets concatenate to one global shuffle; every source of two or more units gets validation
text; a rerun of a bucket replaces what an earlier attempt of it left."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document

from shard_format.shards import ShardReader
from data_pipeline.steps.tokens import (TokenizeDocuments, WriteBucketShards, WriteManifest, bucket_starts, chunks,
                                        order_key, val_threshold)
from data_pipeline.tokenizer import save_hf_tokenizer, train_bpe

EOS = "<|endoftext|>"
SOURCES = ["web", "news", "books"]
WORDS = "the of and a to in is was he for it with as his on be at by had are but from or have an they".split()


def corpus(n_web: int = 300, n_news: int = 2) -> list[Document]:
    rng = random.Random(5)
    docs = [Document(text=" ".join(rng.choices(WORDS, k=rng.randint(5, 60))), id=f"web/{i}", metadata={"source": "web"})
            for i in range(n_web)]
    docs += [Document(text=f"news story {i} " + " ".join(rng.choices(WORDS, k=30)), id=f"news/{i}",
                      metadata={"source": "news"}) for i in range(n_news)]
    book = "\n\n".join(" ".join(rng.choices(WORDS, k=40)) for _ in range(200))  # ~40k characters
    docs.append(Document(text=book, id="books/1", metadata={"source": "books"}))
    return docs


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    save_hf_tokenizer(train_bpe((d.text for d in corpus()), 400, 2, EOS), folder, EOS)
    return folder


def make_shards(root: Path, tokenizer_dir: Path, docs: list[Document], tasks: int, buckets: int,
                chunk_chars: int = 5_000, val_fraction: float = 0.05) -> dict:
    parts, lists = root / "parts", root / "lists"
    for rank in range(tasks):
        step = TokenizeDocuments(str(tokenizer_dir), str(parts), EOS, seed=3, sources=SOURCES, chunk_chars=chunk_chars)
        list(step.run(iter(docs[rank::tasks]), rank=rank, world_size=tasks))
    for bucket in range(buckets):
        step = WriteBucketShards(str(parts), str(root), str(lists), str(tokenizer_dir), EOS, SOURCES, buckets,
                                 val_fraction, max_tokens_per_shard=2_000, formats=["datatrove"])
        list(step.run(rank=bucket, world_size=buckets))
    (root / "tokenizer").mkdir(exist_ok=True)
    save_hf_tokenizer(train_bpe((d.text for d in corpus()), 400, 2, EOS), root / "tokenizer", EOS)
    list(WriteManifest(str(lists), str(root), str(root / "tokenizer"), EOS, buckets, {"test": True}).run())
    return json.loads((root / "manifest.json").read_text())


def documents(root: Path, manifest: dict, split: str, source: str) -> list[bytes]:
    return [doc.tobytes() for shard in manifest["splits"][split]["sources"][source]["shards"]
            for doc in ShardReader(root / shard["path"])]


def shard_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for split in ("train", "val") for p in sorted((root / split).iterdir())}


def test_the_shards_do_not_depend_on_the_number_of_tasks(tmp_path, tokenizer_dir):
    docs = corpus()
    one = make_shards(tmp_path / "one", tokenizer_dir, docs, tasks=1, buckets=4)
    three = make_shards(tmp_path / "three", tokenizer_dir, docs, tasks=3, buckets=4)
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "three")
    assert one["splits"] == three["splits"]
    assert any("_b00003_" in s["path"] for s in one["splits"]["train"]["sources"]["web"]["shards"])


def test_buckets_concatenate_to_one_global_order_by_key(tmp_path, tokenizer_dir):
    docs = corpus()
    single = make_shards(tmp_path / "b1", tokenizer_dir, docs, tasks=2, buckets=1)
    many = make_shards(tmp_path / "b5", tokenizer_dir, docs, tasks=2, buckets=5)
    for split in ("train", "val"):
        for source in single["splits"][split]["sources"]:
            assert documents(tmp_path / "b1", single, split, source) == documents(tmp_path / "b5", many, split, source)
    # the order is by key: the first web documents of train are those with the smallest keys above the val range
    train_web = sorted((order_key(3, d.id), d.id) for d in docs
                       if d.metadata["source"] == "web" and order_key(3, d.id)[0] >= val_threshold(0.05))
    first_shard = ShardReader(tmp_path / "b1" / single["splits"]["train"]["sources"]["web"]["shards"][0]["path"])
    assert first_shard.num_documents >= 2
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    by_id = {d.id: d.text for d in docs}
    assert tok.decode(first_shard.document(0)[:-1].tolist()) == by_id[train_web[0][1]]
    assert tok.decode(first_shard.document(1)[:-1].tolist()) == by_id[train_web[1][1]]


def test_every_source_of_two_or_more_units_gets_validation_text(tmp_path, tokenizer_dir):
    docs = corpus(n_news=2)
    assert all(order_key(3, d.id)[0] >= val_threshold(0.05) for d in docs if d.metadata["source"] == "news")
    manifest = make_shards(tmp_path / "out", tokenizer_dir, docs, tasks=2, buckets=3)
    val = manifest["splits"]["val"]["sources"]
    assert val["news"]["documents"] == 1  # the smaller key of the two, though neither drew val
    assert manifest["splits"]["train"]["sources"]["news"]["documents"] == 1
    assert val["books"]["documents"] >= 1  # the one book, cut into chunks: some of them are validation text
    assert manifest["splits"]["train"]["sources"]["books"]["documents"] >= 1
    lone = make_shards(tmp_path / "lone", tokenizer_dir, corpus(n_news=1), tasks=2, buckets=3)
    assert "news" not in lone["splits"]["val"]["sources"]  # a single unit stays in train


def test_long_documents_are_cut_at_paragraph_breaks():
    text = "\n\n".join(f"paragraph {i} " + "x" * 90 for i in range(50))
    units = chunks("doc", text, 1_000)
    assert [u for u, _ in units] == [f"doc#chunk{i}" for i in range(len(units))]
    assert all(len(t) >= 1_000 for _, t in units[:-1]) and len(units) == 5
    assert "\n\n".join(t for _, t in units) == text
    assert chunks("doc", text, 0) == [("doc", text)] == chunks("doc", text, len(text))


def test_a_rerun_of_a_bucket_replaces_what_an_earlier_attempt_left(tmp_path, tokenizer_dir):
    root = tmp_path / "out"
    manifest = make_shards(root, tokenizer_dir, corpus(), tasks=2, buckets=3)
    before = shard_files(root)
    stale = root / "train" / "web_b00001_00099.ds"
    stale.write_bytes(b"from a crashed attempt")
    step = WriteBucketShards(str(root / "parts"), str(root), str(root / "lists"), str(tokenizer_dir), EOS, SOURCES, 3,
                             0.05, max_tokens_per_shard=2_000, formats=["datatrove"])
    list(step.run(rank=1, world_size=3))
    assert not stale.exists() and shard_files(root) == before
    assert manifest["splits"]["train"]["documents"] > 0


def test_buckets_split_the_key_range_evenly():
    starts = bucket_starts(4)
    assert starts.tolist() == [0, 1 << 62, 1 << 63, 3 << 62]
    keys = np.array([order_key(1, str(i))[0] for i in range(4000)], dtype=np.uint64)
    counts = np.bincount(np.searchsorted(starts, keys, side="right") - 1, minlength=4)
    assert counts.min() > 800


def test_a_part_holds_its_units_in_key_order_so_a_bucket_reads_one_run(tmp_path, tokenizer_dir):
    make_shards(tmp_path / "out", tokenizer_dir, corpus(), tasks=2, buckets=4)
    for rank in range(2):
        keys = np.load(tmp_path / "out" / "parts" / f"part{rank:05d}.keys.npy")
        assert np.all(np.diff(keys["key"].astype(np.float64)) >= 0)
        ends = keys["start"] + keys["length"]
        assert keys["start"][0] == 0 and np.array_equal(keys["start"][1:], ends[:-1])  # contiguous, front to back
        reader = ShardReader(tmp_path / "out" / "parts" / f"part{rank:05d}_00000.ds")
        assert reader.num_tokens == int(ends[-1])
    assert not list((tmp_path / "out" / "parts").glob("arrival*")), "the arrival-order part is removed"
