"""ZeRO-3 builds the model partitioned: no rank ever holds it whole (2 ranks on CPU, gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .train_runs import ENV, free_port

pytestmark = pytest.mark.slow


def build_partitioned(out: Path, *, dim: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int,
                      train: bool = False) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.zero3_worker", "--out", str(out), "--dim", str(dim), "--layers", str(layers),
           "--heads", str(heads), "--kv-heads", str(kv_heads), "--ffn", str(ffn), "--vocab", str(vocab)]
    proc = subprocess.run(cmd + (["--train"] if train else []), cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, f"the ZeRO-3 worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_a_4_gb_model_is_built_without_any_rank_holding_it(tmp_path):
    dim, vocab = 4096, 32000
    ranks = build_partitioned(tmp_path, dim=dim, layers=4, heads=32, kv_heads=8, ffn=11008, vocab=vocab)
    full, largest = ranks[0]["full_bytes"], 4 * vocab * dim  # fp32; the largest parameter is the embedding
    assert 3.7e9 < full < 4.3e9  # about 4 GB of fp32 weights
    for r, rank in enumerate(ranks):
        assert rank["local_bytes"] == pytest.approx(full / 2, rel=1e-3), r  # its half, nothing more
        # while building: its half plus one whole parameter at a time (and allocator slack)
        grown = rank["rss_peak"] - rank["rss_before"]
        assert grown < full / 2 + 1.5 * largest, f"rank {r}: peak RSS grew by {grown / 1e9:.2f} GB building {full / 1e9:.2f} GB"
        assert rank["rss_peak"] < 0.8 * full, f"rank {r}: peak RSS {rank['rss_peak'] / 1e9:.2f} GB"


def test_the_partitioned_build_has_the_weights_of_the_plain_one_and_trains(tmp_path):
    ranks = build_partitioned(tmp_path, dim=1024, layers=8, heads=16, kv_heads=4, ffn=2816, vocab=32000, train=True)
    assert 0.5e9 < ranks[0]["full_bytes"] < 0.7e9
    assert ranks[0]["same_weights"] is True  # the same seed: bit-identical initial weights
    assert all(rank["steps"] == 1 and 9.0 < rank["loss"] < 12.0 for rank in ranks)  # ~ln(32000) at init
