"""Training data loader at 10B and at 10T tokens: start-up, first batch, samples/s and peak RSS, side by side.

The corpora are synthetic: sparse .ds files of 166.7M tokens each (one document, zeros but a few random
tokens at the start), 60 of them for 10B tokens and 60,000 for 10T, in three sources, so they cost
almost no disk and the read path is the loader's own work. Two measurements per corpus:

1. the loader in this process: construction (reading the manifest), the first batch, samples/s;
2. the whole `python -m pretrain.train` of the tiny model for 2 steps (seq_len 256, 1 rank), in a
   process of its own: seconds to its first logged step, seconds in all, and its peak RSS.

Target: at 10T, start-up (2) and peak RSS within 1.5x of 10B, and peak RSS under 3 GB per rank.

    python -m bench.dataloader_speed            # 10B vs 10T tokens (60 vs 60,000 shards)
    python -m bench.dataloader_speed --smoke    # 60 vs 600 shards of 1M tokens (what CI runs)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.synthetic_shards import write_sparse_corpus
from pretrain.data import DataConfig, build_train_batches

ROOT = Path(__file__).resolve().parents[1]

SOURCES = ("web", "news", "books")
SEQ_LEN = 256


def sparse_corpus(folder: Path, shards: int, tokens_per_shard: int) -> int:
    """`shards` train shards in all (split over the sources), one val shard per source; returns the train tokens."""
    rng = np.random.default_rng(0)

    def random_start(f, _tokens: int) -> None:
        f.write(rng.integers(1, 1000, size=512, dtype="<u2").tobytes())

    write_sparse_corpus(folder, SOURCES, {"train": shards // len(SOURCES), "val": 1}, tokens_per_shard, 0, random_start)
    return shards // len(SOURCES) * len(SOURCES) * tokens_per_shard


def loader_figures(path: Path, seconds: float) -> dict[str, float]:
    start = time.perf_counter()
    loader = build_train_batches(DataConfig(path=str(path), seq_len=SEQ_LEN, seed=1), 16)
    construction = time.perf_counter() - start
    start = time.perf_counter()
    next(loader)
    first = time.perf_counter() - start
    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            next(loader)
        batches += 20
    return {"construction_s": construction, "first_batch_s": first, "samples_per_s": batches * 16 / elapsed,
            "samples_per_epoch": loader.samples_per_epoch}


def train_figures(path: Path, out: Path) -> dict[str, float]:
    """Runs the trainer for 2 steps; its seconds to the first logged step, in all, and its peak RSS."""
    cmd = [sys.executable, "-m", "pretrain.train", f"data.path={path}", f"output_dir={out}", "model=tiny",
           f"model.max_seq_len={SEQ_LEN}", "max_steps=2", "logging.mode=disabled", "logging.log_every=1",
           "eval.every_steps=0", "checkpoint.every_steps=0", "checkpoint.resume=none", "batch.micro_batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if first_step is None and line.startswith("step      1"):
            first_step = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - start
    if status != 0 or first_step is None:
        raise SystemExit(f"pretrain.train failed on {path}:\n{''.join(lines[-40:])}")
    return {"first_step_s": first_step, "total_s": total, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="time per samples/s measurement (default 3, smoke 0.3)")
    parser.add_argument("--dir", type=Path, help="where to write the sparse corpora (default: a temporary folder)")
    args = parser.parse_args()
    seconds = args.seconds or (0.3 if args.smoke else 3.0)
    tokens_per_shard = 1 << 20 if args.smoke else 10**13 // 60_000
    scales = (("60 shards", 60), ("600 shards", 600)) if args.smoke else (("10B", 60), ("10T", 60_000))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = {}
        for label, shards in scales:
            folder = Path(tmp) / label
            start = time.perf_counter()
            tokens = sparse_corpus(folder, shards, tokens_per_shard)
            print(f"{label}: {tokens / 1e9:,.1f}B train tokens in {shards:,} shards (written in "
                  f"{time.perf_counter() - start:.0f} s)", flush=True)
            rows[label] = {**loader_figures(folder, seconds), **train_figures(folder, Path(tmp) / f"run_{label}")}
            r = rows[label]
            print(f"  loader: construction {r['construction_s'] * 1000:,.0f} ms, first batch {r['first_batch_s'] * 1000:,.1f} ms, "
                  f"{r['samples_per_s']:,.0f} samples/s of {SEQ_LEN} tokens ({r['samples_per_epoch']:,} samples per epoch)")
            print(f"  pretrain.train, tiny model, 2 steps: first step after {r['first_step_s']:.1f} s, "
                  f"{r['total_s']:.1f} s in all, peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    (small, a), (large, b) = rows.items()
    startup, rss = b["first_step_s"] / a["first_step_s"], b["peak_rss_mb"] / a["peak_rss_mb"]
    print(f"{large} vs {small}: start-up {startup:.2f}x, peak RSS {rss:.2f}x (targets <= 1.5x each, and under 3 GB: "
          f"{b['peak_rss_mb'] / 1024:.2f} GB); samples/s {b['samples_per_s'] / a['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
