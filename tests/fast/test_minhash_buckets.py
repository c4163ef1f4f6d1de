"""Our numpy MinHash bucket stage writes datatrove's `.dups` files byte for byte."""

import random
from pathlib import Path

import pytest
from datatrove.pipeline.dedup import MinhashDedupBuckets
from datatrove.pipeline.dedup.minhash import MinhashConfig

from data_pipeline.fast.minhash_buckets import FastMinhashDedupBuckets
from data_pipeline.fast.minhash_signature import FastMinhashDedupSignature

from .test_minhash_clusters import corpus_documents


@pytest.fixture(scope="module")
def signatures(tmp_path_factory) -> tuple[Path, MinhashConfig]:
    folder, config = tmp_path_factory.mktemp("sigs"), MinhashConfig(num_buckets=4, hashes_per_bucket=4)
    shards = corpus_documents(random.Random(7), 3) + [[]]  # and a task with no documents: empty files
    for rank, docs in enumerate(shards):
        FastMinhashDedupSignature(str(folder), config=config).run(iter(docs), rank, len(shards))
    return folder, config


def dups_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.dups"))}


@pytest.mark.parametrize("workers", [1, 3])
def test_the_pairs_files_equal_datatroves(tmp_path, signatures, workers):
    folder, config = signatures
    world = config.num_buckets * workers
    for rank in range(world):
        MinhashDedupBuckets(str(folder), str(tmp_path / "stock"), config=config).run(None, rank, world)
        list(FastMinhashDedupBuckets(str(folder), str(tmp_path / "fast"), config=config).run(None, rank, world))
    stock, fast = dups_files(tmp_path / "stock"), dups_files(tmp_path / "fast")
    assert len(fast) == world and fast == stock
    assert sum(len(b) for b in fast.values()) > 16 * 50, "the corpus has near-duplicates: many pairs"


def test_a_truncated_signature_file_is_named(tmp_path, signatures):
    folder, config = signatures
    broken = tmp_path / "sigs" / "bucket_000"
    broken.mkdir(parents=True)
    (broken / "00000.minhash.sig").write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match=r"00000\.minhash\.sig: 7 bytes is not a whole number"):
        list(FastMinhashDedupBuckets(str(tmp_path / "sigs"), str(tmp_path / "out"), config=config).run(None, 0, 4))
    with pytest.raises(ValueError, match="multiple of num_buckets=4"):
        list(FastMinhashDedupBuckets(str(folder), str(tmp_path / "out"), config=config).run(None, 0, 6))
