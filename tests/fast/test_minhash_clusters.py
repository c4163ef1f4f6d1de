"""The numpy MinHash clusters step writes datatrove's cluster files byte for byte, in a few bytes a document."""

import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import SENTINEL, MinhashConfig

from bench.corpus_texts import book_texts, news_texts
from data_pipeline.fast.minhash_clusters import FastMinhashDedupCluster, TruncatedPairsFile
from data_pipeline.fast.minhash_signature import FastMinhashDedupSignature

from ..conftest import ROOT, SAMPLE


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def write_pairs(folder: Path, pair_files: list[list[tuple[int, int, int, int]]]) -> None:
    folder.mkdir(parents=True)
    for i, pairs in enumerate(pair_files):
        (folder / f"{i:05d}_00.dups").write_bytes(np.array(pairs, dtype="<u4").reshape(-1, 4).tobytes())


def run_both(tmp_path: Path, pairs_folder: Path, config: MinhashConfig, block_pairs: int = 1 << 20, **options) -> dict:
    """Runs datatrove's step and ours on the same pairs; asserts the same files and returns them."""
    MinhashDedupCluster(str(pairs_folder), str(tmp_path / "stock"), config=config, **options).run()
    FastMinhashDedupCluster(str(pairs_folder), str(tmp_path / "fast"), config=config, block_pairs=block_pairs, **options).run()
    expected = folder_bytes(tmp_path / "stock")
    assert expected, "datatrove wrote no cluster files: the test has no duplicates"
    assert folder_bytes(tmp_path / "fast") == expected
    return expected


def synthetic_pairs(rng: random.Random, files: int, n_pair_files: int) -> list[list[tuple[int, int, int, int]]]:
    """Long chains in and out of order, stars whose hub is first or second, sets joined at equal and unequal sizes,
    many small clusters, repeated and reversed pairs, spread over pairs files in random order."""
    docs = iter(rng.sample([(f, d) for f in range(files) for d in range(3000)], files * 3000))
    pairs = []

    def take(k):
        return [next(docs) for _ in range(k)]

    for length in (2, 3, 50, 400):
        chain = take(length)
        pairs += [(*chain[i], *chain[i + 1]) for i in range(length - 1)]
        chain = take(length)
        links = [(*chain[i], *chain[i + 1]) for i in range(length - 1)]
        rng.shuffle(links)
        pairs += links
    for size in (3, 10, 300):
        hub, *leaves = take(size)
        pairs += [(*hub, *leaf) if rng.random() < 0.5 else (*leaf, *hub) for leaf in leaves]
    for _ in range(300):  # pairs of clusters of equal or different sizes, joined later by one pair
        left, right = take(rng.randint(1, 4)), take(rng.randint(1, 4))
        pairs += [(*left[0], *x) for x in left[1:]] + [(*right[0], *x) for x in right[1:]]
        pairs.append((*rng.choice(left), *rng.choice(right)))
    pool = take(1500)  # random edges among a pool: components of every shape and size
    pairs += [(*rng.choice(pool), *rng.choice(pool)) for _ in range(1200)]
    pairs += rng.sample(pairs, 500) + [(c, d, a, b) for a, b, c, d in rng.sample(pairs, 500)]
    rng.shuffle(pairs)
    cuts = sorted(rng.sample(range(1, len(pairs)), n_pair_files - 1))
    return [pairs[i:j] for i, j in zip([0, *cuts], [*cuts, len(pairs)])]


@pytest.mark.parametrize("block_pairs", [1, 7, 1 << 20])
def test_synthetic_pairs_give_datatrove_files(tmp_path, block_pairs):
    write_pairs(tmp_path / "pairs", synthetic_pairs(random.Random(1), files=5, n_pair_files=4))
    config = MinhashConfig(num_buckets=2)
    written = run_both(tmp_path, tmp_path / "pairs", config, block_pairs=block_pairs, save_cluster_id=True,
                       save_cluster_size=True)
    assert {name.split(".")[1] for name in written} == {"remove", "clusters", "sizes"}


def test_giant_component_from_random_edges(tmp_path):
    """One component merged from many sets of all sizes: every union-by-size decision counts."""
    rng = random.Random(2)
    pairs = [(rng.randrange(3), rng.randrange(4000), rng.randrange(3), rng.randrange(4000)) for _ in range(6000)]
    write_pairs(tmp_path / "pairs", [pairs[:3000], pairs[3000:]])
    run_both(tmp_path, tmp_path / "pairs", MinhashConfig(num_buckets=1), block_pairs=500, save_cluster_id=True)


@pytest.mark.parametrize("ignore_index_matches", [False, True])
def test_index_matches(tmp_path, ignore_index_matches):
    """Pairs with an indexed document (the sentinel) make the sentinel the root, or are skipped."""
    rng = random.Random(3)
    pairs = [(rng.randrange(2), rng.randrange(300), rng.randrange(2), rng.randrange(300)) for _ in range(250)]
    pairs += [(SENTINEL, SENTINEL, rng.randrange(2), rng.randrange(300)) for _ in range(40)]
    rng.shuffle(pairs)
    write_pairs(tmp_path / "pairs", [pairs])
    run_both(tmp_path, tmp_path / "pairs", MinhashConfig(num_buckets=1), block_pairs=64, save_cluster_id=True,
             save_cluster_size=True, ignore_index_matches=ignore_index_matches)


def corpus_documents(copies_rng: random.Random, tasks: int) -> list[list[Document]]:
    """Sample texts spread over `tasks` files, with near-duplicates (a word changed) and exact copies injected."""
    texts = list(book_texts(SAMPLE / "books"))[::4] + list(news_texts(SAMPLE / "news"))[::3]
    for original in copies_rng.sample(texts, 60):
        for _ in range(copies_rng.randint(1, 4)):
            words = original.split()
            words[copies_rng.randrange(len(words))] = "changed"
            texts.append(" ".join(words) if copies_rng.random() < 0.7 else original)
    copies_rng.shuffle(texts)
    return [[Document(text=t, id=f"{rank}/{i}") for i, t in enumerate(texts[rank::tasks])] for rank in range(tasks)]


def test_sample_corpus_buckets_give_datatrove_files_and_filter(tmp_path):
    tasks, config = 3, MinhashConfig(num_buckets=4, hashes_per_bucket=4)
    shards = corpus_documents(random.Random(4), tasks)
    for rank, docs in enumerate(shards):
        FastMinhashDedupSignature(str(tmp_path / "sigs"), config=config).run(iter(docs), rank, tasks)
    for bucket in range(config.num_buckets):
        MinhashDedupBuckets(str(tmp_path / "sigs"), str(tmp_path / "pairs"), config=config).run(None, bucket, config.num_buckets)
    written = run_both(tmp_path, tmp_path / "pairs", config, block_pairs=16, save_cluster_id=True)
    assert any(name.endswith(".remove") for name in written)

    for rank, docs in enumerate(shards):
        kept = {}
        for folder in ("stock", "fast"):
            dedup_filter = MinhashDedupFilter(str(tmp_path / folder), load_cluster_ids=True)
            fresh = [Document(text=d.text, id=d.id) for d in docs]
            kept[folder] = [(d.id, d.metadata["minhash_cluster_id"]) for d in dedup_filter.run(iter(fresh), rank, tasks)]
        assert kept["fast"] == kept["stock"]


def test_no_pairs_writes_nothing(tmp_path):
    write_pairs(tmp_path / "pairs", [[]])
    FastMinhashDedupCluster(str(tmp_path / "pairs"), str(tmp_path / "fast"), config=MinhashConfig(num_buckets=1),
                            save_cluster_id=True).run()
    assert not (tmp_path / "fast").exists() or not list((tmp_path / "fast").iterdir())


def test_truncated_pairs_file_is_named(tmp_path):
    write_pairs(tmp_path / "pairs", [[(0, 1, 0, 2)], [(0, 3, 1, 4), (1, 5, 1, 6)]])
    damaged = tmp_path / "pairs" / "00001_00.dups"
    damaged.write_bytes(damaged.read_bytes()[:-5])
    step = FastMinhashDedupCluster(str(tmp_path / "pairs"), str(tmp_path / "fast"), config=MinhashConfig(num_buckets=1))
    with pytest.raises(TruncatedPairsFile, match="00001_00.dups"):
        step.run()


def test_pairs_file_truncated_while_read_is_named(tmp_path):
    """A file that is shorter than the listing said (still being written, a short read) is caught by the reader."""
    write_pairs(tmp_path / "pairs", [[(0, 1, 0, 2), (0, 3, 0, 4)]])
    path = tmp_path / "pairs" / "00000_00.dups"
    path.write_bytes(path.read_bytes()[:-3])
    step = FastMinhashDedupCluster(str(tmp_path / "pairs"), str(tmp_path / "fast"), config=MinhashConfig(num_buckets=1),
                                   block_pairs=1)
    with pytest.raises(TruncatedPairsFile, match="00000_00.dups.*at byte 16"):
        list(step.pair_blocks("00000_00.dups"))


def peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_per_document_is_a_few_tens_of_bytes(tmp_path):
    """Chains of 10 documents, each pair seen in 4 buckets: peak traced memory per document in a pair, ours vs
    datatrove's (numpy reports its buffers to tracemalloc)."""
    rng = np.random.default_rng(5)
    n_docs = 100_000
    docs = rng.permutation(n_docs).astype(np.uint32)
    files, ids = docs % 50, docs // 50
    chain_links = np.arange(n_docs - 1)
    chain_links = chain_links[chain_links % 10 != 9]  # 10,000 chains of 10
    pairs = np.column_stack([files[chain_links], ids[chain_links], files[chain_links + 1], ids[chain_links + 1]])
    folder = tmp_path / "pairs"
    folder.mkdir()
    for bucket in range(4):
        (folder / f"{bucket:05d}_00.dups").write_bytes(pairs.astype("<u4").tobytes())
    config = MinhashConfig(num_buckets=4)
    ours = peak_bytes(lambda: FastMinhashDedupCluster(str(folder), str(tmp_path / "fast"), config=config,
                                                      block_pairs=1 << 12, save_cluster_id=True).run())
    assert ours / n_docs < 50, f"{ours / n_docs:.1f} bytes per document"
    print(f"peak {ours / n_docs:.1f} bytes per document")
    stock = peak_bytes(lambda: MinhashDedupCluster(str(folder), str(tmp_path / "stock"), config=config,
                                                   save_cluster_id=True).run())
    print(f"datatrove peak {stock / n_docs:.1f} bytes per document")
    assert stock / ours > 3, f"datatrove {stock / n_docs:.1f} vs ours {ours / n_docs:.1f} bytes per document"
    assert folder_bytes(tmp_path / "fast") == folder_bytes(tmp_path / "stock")


@pytest.mark.slow
def test_benchmark_smoke_checks_same_files():
    proc = subprocess.run([sys.executable, "-m", "bench.minhash_clusters", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same files as datatrove's" in proc.stdout and "ratio:" in proc.stdout


def test_clusters_do_not_depend_on_the_bucket_workers(tmp_path):
    """dedup.minhash.bucket_workers splits each LSH bucket's hash range over tasks: the same pairs in the
    same order, so the same clusters and the same kept documents."""
    tasks, config = 3, MinhashConfig(num_buckets=4, hashes_per_bucket=4)
    for rank, docs in enumerate(corpus_documents(random.Random(4), tasks)):
        FastMinhashDedupSignature(str(tmp_path / "sigs"), config=config).run(iter(docs), rank, tasks)
    written = {}
    for workers in (1, 3):
        world = config.num_buckets * workers
        for rank in range(world):
            MinhashDedupBuckets(str(tmp_path / "sigs"), str(tmp_path / f"pairs{workers}"), config=config).run(None, rank, world)
        FastMinhashDedupCluster(str(tmp_path / f"pairs{workers}"), str(tmp_path / f"out{workers}"), config=config,
                                save_cluster_id=True).run()
        written[workers] = folder_bytes(tmp_path / f"out{workers}")
    assert len(list((tmp_path / "pairs3").glob("*.dups"))) == 12
    assert written[1] == written[3] and any(name.endswith(".remove") for name in written[1])
