"""pretrain/data.py: packing, mixing, rank sharding, exact resume, lazy start-up, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.synthetic_shards import write_sparse_corpus
from shard_format import manifest as manifest_lib
from shard_format.errors import InputError
from shard_format.shards import ShardReader, ShardWriter, token_dtype_for_vocab
from pretrain.data import (
    DataConfig,
    MixedSampleOrder,
    PackedShardDataset,
    build_train_batches,
    permute,
    validation_batches,
)

from .conftest import ROOT

EOS = 0
SEQ = 16


def write_corpus(folder: Path, layout: dict[str, dict[str, list[np.ndarray]]], vocab_size: int = 1000,
                 max_tokens_per_shard: int = 250) -> dict[tuple[str, str], np.ndarray]:
    """Shards + manifest for {split: {source: documents}}; returns each (split, source)'s token stream."""
    splits, streams = {}, {}
    for split, sources in layout.items():
        for source, docs in sources.items():
            with ShardWriter(folder / split, source, vocab_size, max_tokens_per_shard) as writer:
                for doc in docs:
                    writer.write(doc)
            splits.setdefault(split, {})[source] = writer.shards
            streams[split, source] = np.concatenate(docs).astype(np.int64)
    manifest = manifest_lib.build(tokenizer_folder=Path("tokenizer"), vocab_size=vocab_size, eos_token="<eos>",
                                  eos_id=EOS, token_dtype=token_dtype_for_vocab(vocab_size).name, splits=splits,
                                  resolved_config={})
    manifest_lib.write(manifest, folder)
    return streams


def random_docs(rng: np.random.Generator, num_tokens: int, vocab_size: int = 1000) -> list[np.ndarray]:
    docs, total = [], 0
    while total < num_tokens:
        doc = np.append(rng.integers(1, vocab_size, size=int(rng.integers(1, 60))), EOS)
        docs.append(doc)
        total += len(doc)
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("corpus")
    layout = {
        "train": {"web": random_docs(rng, 3000), "news": random_docs(rng, 1500), "books": random_docs(rng, 600)},
        "val": {"web": random_docs(rng, 400), "news": random_docs(rng, 200)},
    }
    return folder, write_corpus(folder, layout)


def rows(inputs: torch.Tensor, targets: torch.Tensor) -> list[np.ndarray]:
    """The seq_len + 1 token samples a batch was made of."""
    assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == targets.shape
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    return [np.append(i.numpy(), t[-1].item()) for i, t in zip(inputs, targets)]


# -------------------------------------------------------------------------------------------- packing


def test_packing_reproduces_the_token_stream(corpus):
    folder, streams = corpus
    ds = PackedShardDataset(folder, "train", SEQ)
    assert ds.sources == ["books", "news", "web"] and ds.vocab_size == 1000 and ds.eos_id == EOS
    for source in ds.sources:
        stream = streams["train", source]
        n = ds.num_samples(source)
        assert ds.num_tokens(source) == len(stream) and n == (len(stream) - 1) // SEQ
        samples = [ds.sample(source, i) for i in range(n)]
        for i, sample in enumerate(samples):
            assert sample.shape == (SEQ + 1,)
            np.testing.assert_array_equal(sample, stream[i * SEQ:i * SEQ + SEQ + 1])
            out = np.zeros(SEQ + 1, dtype=np.int64)
            ds.read_into(source, i, out)
            np.testing.assert_array_equal(out, sample)
        # inputs of consecutive samples, then the last target: the stream itself, nothing skipped or repeated
        rebuilt = np.concatenate([s[:-1] for s in samples] + [samples[-1][-1:]])
        np.testing.assert_array_equal(rebuilt, stream[:n * SEQ + 1])
        with pytest.raises(IndexError, match=source):
            ds.sample(source, n)


def test_samples_crossing_shard_boundaries(corpus, tmp_path):
    folder, streams = corpus
    ds = PackedShardDataset(folder, "train", SEQ)
    shard_ends = np.cumsum([s["tokens"] for s in ds.manifest["splits"]["train"]["sources"]["web"]["shards"]])
    assert len(shard_ends) >= 10
    crossing = [i for i in range(ds.num_samples("web"))
                if any(i * SEQ < end < i * SEQ + SEQ + 1 for end in shard_ends[:-1])]
    assert len(crossing) >= 5
    stream = streams["train", "web"]
    for i in crossing:
        np.testing.assert_array_equal(ds.sample("web", i), stream[i * SEQ:i * SEQ + SEQ + 1])

    # shards shorter than a sample: one sample spans several of them
    docs = [np.array([5, 6, EOS]) for _ in range(40)]
    streams = write_corpus(tmp_path, {"train": {"tiny": docs}}, max_tokens_per_shard=4)
    tiny = PackedShardDataset(tmp_path, "train", SEQ)
    assert len(tiny.manifest["splits"]["train"]["sources"]["tiny"]["shards"]) == 40
    for i in range(tiny.num_samples("tiny")):
        np.testing.assert_array_equal(tiny.sample("tiny", i), streams["train", "tiny"][i * SEQ:i * SEQ + SEQ + 1])


def test_uint32_shards(tmp_path):
    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(60000, 70000, size=30), EOS) for _ in range(20)]
    streams = write_corpus(tmp_path, {"train": {"big": docs}}, vocab_size=70000, max_tokens_per_shard=100)
    ds = PackedShardDataset(tmp_path, "train", SEQ)
    assert ds.dtype == np.dtype("<u4")
    loader = build_train_batches(DataConfig(path=str(tmp_path), seq_len=SEQ), micro_batch_size=4)
    for row, (source, idx) in zip(rows(*next(loader)), loader.order.samples_at(np.arange(4))):
        np.testing.assert_array_equal(row, streams["train", source][idx * SEQ:idx * SEQ + SEQ + 1])
        assert row.max() >= 60000


# --------------------------------------------------------------------------------------------- mixing


def test_epoch_without_weights_is_a_permutation_of_every_sample(corpus):
    ds = PackedShardDataset(corpus[0], "train", SEQ)
    order = MixedSampleOrder(ds.samples_per_source, {}, seed=3)
    ids = order.epoch_order(0)
    assert order.samples_per_epoch == sum(ds.samples_per_source.values())
    assert sorted(ids.tolist()) == list(range(order.samples_per_epoch))
    assert ids.tolist() != sorted(ids.tolist())


def test_mixing_proportions_follow_the_weights():
    num_samples = {"a": 100_000, "b": 5_000, "c": 20_000}
    weights = {"a": 1.0, "b": 1.0, "c": 2.0}
    order = MixedSampleOrder(num_samples, weights, seed=7)
    n = order.samples_per_epoch
    assert n == 125_000
    ids = order.epoch_order(0)
    source, idx = order.decode(ids)
    counts = np.bincount(source, minlength=3)
    for j, s in enumerate(order.sources):
        assert abs(counts[j] - round(weights[s] / 4 * n)) <= 1
    assert counts.sum() == n
    # b is upsampled (31250 from 5000): every sample 6 or 7 times; a is downsampled: distinct samples
    b_uses = np.bincount(idx[source == 1], minlength=5000)
    assert set(b_uses.tolist()) == {6, 7}
    assert len(np.unique(idx[source == 0])) == counts[0]
    # the shuffle mixes: any tenth of the epoch holds each source in about its share
    for part in np.array_split(source, 10):
        shares = np.bincount(part, minlength=3) / len(part)
        np.testing.assert_allclose(shares, [0.25, 0.25, 0.5], atol=0.02)  # > 4 sigma
    # a weight 0 leaves a source out
    zero = MixedSampleOrder(num_samples, {"a": 1, "b": 0, "c": 1}, seed=7)
    assert 1 not in set(zero.decode(zero.epoch_order(0))[0].tolist())
    # downsampled sources draw another subset in the next epoch
    next_a = order.decode(order.epoch_order(1))
    assert set(next_a[1][next_a[0] == 0].tolist()) != set(idx[source == 0].tolist())


def test_samples_per_source_are_counted_from_the_order_across_epochs():
    order = MixedSampleOrder({"a": 700, "b": 50, "c": 250}, {"a": 1.0, "b": 1.0, "c": 2.0}, seed=5)
    n = order.samples_per_epoch
    for start, stop in [(0, 0), (0, 37), (13, n), (0, n), (n - 5, 3 * n + 17), (2 * n, 3 * n)]:
        source, _ = order.decode(order.global_ids(np.arange(start, stop, dtype=np.int64)))
        expected = np.bincount(source, minlength=3)
        np.testing.assert_array_equal(order.source_counts(start, stop, chunk=64), expected, err_msg=f"{start, stop}")


def test_same_seed_same_order_other_seed_or_epoch_other_order(corpus):
    folder, _ = corpus
    cfg = DataConfig(path=str(folder), seq_len=SEQ, weights={"web": 1, "news": 2, "books": 1}, seed=11)
    a, b = build_train_batches(cfg, 4), build_train_batches(cfg, 4)
    np.testing.assert_array_equal(a.order.epoch_order(0), b.order.epoch_order(0))
    for _ in range(5):
        for x, y in zip(next(a), next(b)):
            assert torch.equal(x, y)
    other = build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, weights=cfg.weights, seed=12), 4)
    assert not np.array_equal(other.order.epoch_order(0), a.order.epoch_order(0))
    assert not np.array_equal(a.order.epoch_order(1), a.order.epoch_order(0))


# ------------------------------------------------------------------------------------- ranks and resume


def run_ranks(folder: Path, world: int, steps: int, global_batch: int = 8, state: dict | None = None,
              weights: dict | None = None) -> tuple[list[Counter], list[dict]]:
    """`steps` global steps on `world` ranks: per step, the multiset of (source, idx, tokens) consumed."""
    cfg = DataConfig(path=str(folder), seq_len=SEQ, weights=weights or {"web": 1, "news": 1, "books": 2}, seed=5)
    mb = 2
    loaders = [build_train_batches(cfg, mb, rank, world, global_batch) for rank in range(world)]
    if state is not None:
        for loader in loaders:
            loader.load_state_dict(state)
    per_step = []
    for _ in range(steps):
        consumed = Counter()
        for loader in loaders:
            for _ in range(loader.grad_accum):
                expected = loader.next_samples()
                samples = rows(*next(loader))
                assert len(samples) == mb
                for (source, idx), sample in zip(expected, samples):
                    np.testing.assert_array_equal(sample, loader.dataset.sample(source, idx))
                    consumed[source, idx, sample.tobytes()] += 1
        per_step.append(consumed)
    return per_step, [loader.state_dict() for loader in loaders]


def test_samples_per_global_step_do_not_depend_on_the_world_size(corpus):
    folder, _ = corpus
    steps = 60  # 480 samples: past the end of the first epoch
    reference, _ = run_ranks(folder, 1, steps)
    order = build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, weights={"web": 1, "news": 1, "books": 2},
                                           seed=5), 8).order
    assert steps * 8 > order.samples_per_epoch
    for t, consumed in enumerate(reference):
        assert Counter((s, i) for s, i, _ in consumed.elements()) == Counter(order.samples_at(np.arange(t * 8, t * 8 + 8)))
    for world in (2, 4):
        per_step, states = run_ranks(folder, world, steps)
        assert per_step == reference
        assert all(state == states[0] for state in states)
        assert states[0]["samples_consumed"] == steps * 8 and states[0]["epoch"] == steps * 8 // order.samples_per_epoch


@pytest.mark.parametrize("world_before,world_after", [(1, 1), (2, 1), (1, 4), (4, 2)])
def test_resume_continues_exactly(corpus, world_before, world_after):
    folder, _ = corpus
    uninterrupted, _ = run_ranks(folder, 1, 50)
    _, states = run_ranks(folder, world_before, 20)
    state = json.loads(json.dumps(states[0]))  # what a checkpoint stores: plain JSON-able ints
    assert state == {"seed": 5, "epoch": 0, "samples_consumed": 160}
    resumed, _ = run_ranks(folder, world_after, 30, state=state)
    assert resumed == uninterrupted[20:]


def test_resume_exact_order_and_tensors_on_one_rank(corpus):
    folder, _ = corpus
    cfg = DataConfig(path=str(folder), seq_len=SEQ, seed=9)
    a = build_train_batches(cfg, 3)
    batches = [next(a) for _ in range(120)]  # crosses two epoch boundaries
    b = build_train_batches(cfg, 3)
    for _ in range(70):
        next(b)
    c = build_train_batches(cfg, 3)
    c.load_state_dict(b.state_dict())
    assert c.state_dict()["epoch"] == 70 * 3 // c.samples_per_epoch
    for expected in batches[70:]:
        got = next(c)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_load_state_dict_checks(corpus):
    folder, _ = corpus
    loader = build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, seed=1), 2)
    with pytest.raises(ValueError, match="'samples_consumed'"):
        loader.load_state_dict({"seed": 1, "epoch": 0})
    with pytest.raises(ValueError, match="'step'"):
        loader.load_state_dict({"seed": 1, "epoch": 0, "samples_consumed": 0, "step": 3})
    with pytest.raises(ValueError, match="seq_len changed"):
        loader.load_state_dict({"seed": 1, "epoch": 3, "samples_consumed": 10})
    other = build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, seed=2), 2)
    for _ in range(4):
        next(other)
    with pytest.warns(UserWarning, match="seed 2"):
        loader.load_state_dict(other.state_dict())
    assert loader.state_dict() == other.state_dict()
    assert torch.equal(next(loader)[0], next(other)[0])


def test_prefetch_and_access_advice_do_not_change_the_data(corpus, monkeypatch):
    folder, _ = corpus
    cfg = DataConfig(path=str(folder), seq_len=SEQ, seed=3)
    plain = build_train_batches(cfg, 2, 1, 2, prefetch=0)
    plain.dataset.access = "default"
    ahead = build_train_batches(cfg, 2, 1, 2, prefetch=4)
    asked = []
    original = ahead.dataset.prefetch
    monkeypatch.setattr(ahead.dataset, "prefetch", lambda source, idx: asked.append((source, idx)) or original(source, idx))
    expected = [ahead.order.samples_at(ahead._positions(4 * k)) for k in range(6)]
    next(ahead)
    assert asked == [x for batch in expected[:4] for x in batch]  # the current micro-batch and 3 more
    next(ahead)
    assert asked[8:] == expected[4]
    next(plain), next(plain)
    for _ in range(300):
        x, y = next(plain), next(ahead)
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    ahead.advance(3)  # off the micro-step grid: prefetching restarts at the new position
    plain.advance(3)
    assert torch.equal(next(plain)[0], next(ahead)[0])
    assert asked[-2:] == ahead.order.samples_at(ahead._positions(ahead.samples_consumed + 2 * 4))


def test_global_batch_size_must_be_whole_micro_steps(corpus):
    cfg = DataConfig(path=str(corpus[0]), seq_len=SEQ)
    assert build_train_batches(cfg, 2, 1, 2, global_batch_size=12).grad_accum == 3
    with pytest.raises(ValueError, match="global_batch_size 10"):
        build_train_batches(cfg, 2, 1, 2, global_batch_size=10)
    with pytest.raises(ValueError, match="dp_rank"):
        build_train_batches(cfg, 2, 2, 2)


# ------------------------------------------------------------------------------------------ validation


def test_validation_covers_each_sample_once_across_ranks(corpus):
    folder, streams = corpus
    ds = PackedShardDataset(folder, "val", SEQ)
    every = [(s, i) for s in ds.sources for i in range(ds.num_samples(s))]
    seen = []
    for rank in range(3):
        val = validation_batches(folder, "val", SEQ, batch_size=4, dp_rank=rank, dp_world=3)
        mine = list(val.samples())
        assert mine == every[rank::3]
        batches = list(val)
        assert len(batches) == len(val) == -(-len(mine) // 4)
        got = [row for batch in batches for row in rows(*batch)]
        for (source, idx), row in zip(mine, got, strict=True):
            np.testing.assert_array_equal(row, streams["val", source][idx * SEQ:idx * SEQ + SEQ + 1])
        seen += mine
        assert [b[0].tolist() for b in val] == [b[0].tolist() for b in batches]  # re-iterable, deterministic
    assert sorted(seen) == sorted(every)
    news = validation_batches(folder, "val", SEQ, batch_size=5, source="news")
    assert list(news.samples()) == [("news", i) for i in range(ds.num_samples("news"))]
    assert sum(len(b[0]) for b in news) == ds.num_samples("news")


# ------------------------------------------------------------------------------------ lazy construction


def sparse_corpus(folder: Path, shards_per_source: int, tokens_per_shard: int,
                  sources: tuple[str, ...] = ("web", "news")) -> None:
    """A manifest over huge sparse .ds files (one document each); a marker token at every shard's edges."""

    def edge_markers(f, tokens: int) -> None:
        f.write(np.array([7], dtype="<u2").tobytes())
        f.seek((tokens - 1) * 2)
        f.write(np.array([EOS + 9], dtype="<u2").tobytes())

    write_sparse_corpus(folder, sources, {"train": shards_per_source, "val": shards_per_source}, tokens_per_shard, EOS,
                        edge_markers)


def test_construction_reads_no_token_data(tmp_path, monkeypatch):
    sparse_corpus(tmp_path, shards_per_source=2, tokens_per_shard=2**31)  # 4 GiB per shard, 32 GiB in all
    calls = Counter()
    for method in ("__init__", "tokens", "document"):
        original = getattr(ShardReader, method)

        def counting(self, *args, _original=original, _method=method, **kwargs):
            calls[_method] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ShardReader, method, counting)

    seq = 4095
    loader = build_train_batches(DataConfig(path=str(tmp_path), seq_len=seq, seed=1), 4, 1, 2)
    val = validation_batches(tmp_path, "val", seq, batch_size=2, source="news", dp_rank=1, dp_world=2)
    assert loader.samples_per_epoch == 2 * ((2**32 - 1) // seq)
    assert val.num_samples == (2**32 - 1) // seq // 2 and len(val) == -(-val.num_samples // 2)
    assert not calls, f"construction read shards: {dict(calls)}"

    inputs, targets = next(loader)
    assert calls["__init__"] >= 1 and calls["tokens"] >= 1 and inputs.shape == (4, seq)
    # the sample that crosses the first shard boundary: last token of shard 0, first of shard 1
    sample = loader.dataset.sample("web", 2**31 // seq)
    boundary = 2**31 - (2**31 // seq) * seq
    assert sample[boundary - 1] == 9 and sample[boundary] == 7 and sample.sum() == 16
    assert loader.dataset.sample("web", 0)[0] == 7


# -------------------------------------------------------------------------------------------- errors


def test_errors_name_the_problem(corpus, tmp_path):
    folder, _ = corpus
    with pytest.raises(InputError, match="no shard manifest"):
        PackedShardDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="'test'"):
        PackedShardDataset(folder, "test")
    with pytest.raises(ValueError, match="unknown source 'wiki'"):
        build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, weights={"web": 1, "wiki": 1}), 2)
    with pytest.raises(ValueError, match="no weight for source 'books'"):
        build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, weights={"web": 1, "news": 1}), 2)
    with pytest.raises(ValueError, match="weights.news"):
        build_train_batches(DataConfig(path=str(folder), seq_len=SEQ, weights={"web": 1, "news": -1, "books": 1}), 2)
    # books holds ~600 tokens: too short for seq_len 1000, unless left out with weight 0
    with pytest.raises(ValueError, match="source 'books'"):
        build_train_batches(DataConfig(path=str(folder), seq_len=1000), 2)
    loader = build_train_batches(DataConfig(path=str(folder), seq_len=1000, weights={"web": 1, "news": 1, "books": 0}), 1)
    assert {s for s, _ in loader.order.samples_at(np.arange(loader.samples_per_epoch))} == {"web", "news"}
    with pytest.raises(ValueError, match="source 'news' of split 'val' holds"):
        validation_batches(folder, "val", seq_len=300)
    with pytest.raises(ValueError, match="no source 'books' in split 'val'"):
        validation_batches(folder, "val", SEQ, source="books")


def test_token_dtype_and_shard_mismatches_are_named(tmp_path):
    write_corpus(tmp_path, {"train": {"web": random_docs(np.random.default_rng(2), 500)}})
    manifest = json.loads((tmp_path / "manifest.json").read_text())

    def rewrite(**changes):
        manifest_lib.write({**manifest, **changes}, tmp_path)

    rewrite(token_dtype="uint32")
    with pytest.raises(ValueError, match="token dtype mismatch.*uint32.*vocab_size 1000"):
        PackedShardDataset(tmp_path)
    # construction touches no shard (the same cost on every rank at any number of shards): a shard's
    # problems are named when it is first read
    rewrite(token_dtype="uint32", tokenizer={**manifest["tokenizer"], "vocab_size": 70000})
    with pytest.raises(ValueError, match=r"web_00000\.ds: token dtype mismatch"):
        PackedShardDataset(tmp_path, seq_len=SEQ).sample("web", 0)
    rewrite(token_dtype="float32")
    with pytest.raises(ValueError, match="token_dtype 'float32'"):
        PackedShardDataset(tmp_path)
    rewrite()
    (tmp_path / "train" / "web_00001.ds").unlink()
    dataset = PackedShardDataset(tmp_path, seq_len=SEQ)
    with pytest.raises(InputError, match=r"web_00001\.ds: shard of source 'web' \(train\) listed in the manifest"):
        for i in range(dataset.num_samples("web")):
            dataset.sample("web", i)


def test_data_config_is_a_structured_config(corpus):
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"path": str(corpus[0]), "seq_len": SEQ,
                                                            "weights": {"web": 2, "news": 1, "books": 1}})
    loader = build_train_batches(OmegaConf.to_object(cfg), 2)
    assert loader.order.weights == {"books": 1.0, "news": 1.0, "web": 2.0}


# ------------------------------------------------------------------------------------ the real pipeline


@pytest.mark.slow
def test_loader_on_the_sample_pipeline_output(sample_run):
    ds = PackedShardDataset(sample_run, "train", 256)
    for source in ds.sources:
        shards = ds.manifest["splits"]["train"]["sources"][source]["shards"]
        stream = np.concatenate([doc for s in shards for doc in ShardReader(sample_run / s["path"])])
        assert stream[-1] == ds.eos_id
        for i in (0, ds.num_samples(source) // 2, ds.num_samples(source) - 1):
            np.testing.assert_array_equal(ds.sample(source, i), stream[i * 256:i * 256 + 257])
    loader = build_train_batches(DataConfig(path=str(sample_run), seq_len=256), 8)
    inputs, targets = next(loader)
    assert inputs.shape == (8, 256) and int(inputs.max()) < ds.vocab_size
    val = validation_batches(sample_run, batch_size=8)
    assert sum(len(b[0]) for b in val) == sum(PackedShardDataset(sample_run, "val", 256).samples_per_source.values())


def test_dataloader_bench_smoke():
    proc = subprocess.run([sys.executable, "-m", "bench.dataloader_speed", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "samples/s" in proc.stdout and "construction" in proc.stdout


# ------------------------------------------------------------------------------------ at any scale


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 2**16, 2**20 + 7])
def test_permute_is_a_keyed_bijection(n):
    keys = np.random.SeedSequence(5).generate_state(4, dtype=np.uint64)
    out = permute(np.arange(n), n, keys)
    assert sorted(out.tolist()) == list(range(n))
    if n > 16:
        other = permute(np.arange(n), n, np.random.SeedSequence(6).generate_state(4, dtype=np.uint64))
        assert not np.array_equal(out, other) and not np.array_equal(out, np.arange(n))


def test_the_order_of_a_10t_token_corpus_is_computed_not_built():
    """39 billion samples per epoch (10T tokens at seq_len 256): an epoch's order would be 291 GiB."""
    order = MixedSampleOrder({"web": 30_000_000_000, "books": 9_062_499_843}, {"web": 0.5, "books": 0.5}, seed=3)
    positions = np.array([0, 1, 7, 10**9, order.samples_per_epoch - 1, order.samples_per_epoch + 5], dtype=np.int64)
    ids = order.global_ids(positions)
    assert np.array_equal(ids, order.global_ids(positions))  # a function of the position
    source, idx = order.decode(ids)
    assert all(0 <= i < order.num_samples[s] for s, i in zip(source.tolist(), idx.tolist()))
    assert len(set(ids[:5].tolist())) == 5


def test_open_shards_are_bounded(corpus):
    folder, streams = corpus
    dataset = PackedShardDataset(folder, "train", SEQ, max_open_shards=2)
    assert dataset.num_shards("web") > 4
    for i in range(dataset.num_samples("web")):
        expected = streams["train", "web"][i * SEQ:i * SEQ + SEQ + 1]
        assert np.array_equal(dataset.sample("web", i), expected)
        assert len(dataset._open) <= 2
