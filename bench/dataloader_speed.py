"""Training data loader: construction time and samples/s delivered, on a manifest and one 10x larger.

The manifests are synthetic: sparse .ds files (one document each), so they cost no disk and the read
path is the loader's own work (slicing the memory maps, packing, the int64 batch, the tensors), not the
disk's. Construction must not grow with the corpus (it reads the manifest and stats the shards); the
first batch builds the epoch's shuffled order, which does grow with the number of samples (4 bytes each).
Whether the samples/s suffice is measured by the trainer against what a step consumes.

    python bench/dataloader_speed.py                       # 3 sources x 8 shards x 16M tokens, then 80 shards each
    python bench/dataloader_speed.py --smoke               # 3 sources x 4 shards x 1M tokens, then 40 shards each
    python bench/dataloader_speed.py --path outputs/data   # also a real shard folder
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.data import DataConfig, build_train_batches, validation_batches  # noqa: E402
from synthetic_shards import write_sparse_corpus  # noqa: E402

SOURCES = ("web", "news", "books")


def sparse_manifest(folder: Path, shards_per_source: int, tokens_per_shard: int) -> int:
    """Shards of `tokens_per_shard` tokens (sparse: zeros, a few random tokens); returns the train tokens."""
    rng = np.random.default_rng(0)

    def random_start(f, _tokens: int) -> None:
        f.write(rng.integers(1, 1000, size=4096, dtype="<u2").tobytes())

    write_sparse_corpus(folder, SOURCES, {"train": shards_per_source, "val": 1}, tokens_per_shard, 0, random_start)
    return len(SOURCES) * shards_per_source * tokens_per_shard


def measure(label: str, path: Path, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    loader = build_train_batches(DataConfig(path=str(path), seq_len=args.seq_len, seed=1), args.micro_batch)
    val = validation_batches(path, seq_len=args.seq_len, batch_size=args.micro_batch)
    construction = time.perf_counter() - start

    start = time.perf_counter()
    next(loader)
    first = time.perf_counter() - start

    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < args.seconds:
        for _ in range(20):
            next(loader)
        batches += 20
    rate = batches * args.micro_batch / elapsed

    start = time.perf_counter()
    val_samples = 0
    for inputs, _ in val:
        val_samples += len(inputs)
        if time.perf_counter() - start > args.seconds:
            break
    val_rate = val_samples / (time.perf_counter() - start)

    train_tokens = sum(loader.dataset.num_tokens(s) for s in loader.dataset.sources)
    print(f"{label}: {train_tokens / 1e6:,.0f}M train tokens, {loader.samples_per_epoch:,} samples per epoch, "
          f"{sum(loader.dataset.num_shards(s) for s in loader.dataset.sources)} train shards")
    print(f"  construction {construction * 1000:.1f} ms; first batch (builds the epoch order) {first * 1000:.1f} ms")
    print(f"  train: {rate:,.0f} samples/s ({rate * args.seq_len / 1e6:.1f}M tokens/s), micro-batch "
          f"{args.micro_batch} x {args.seq_len}; validation: {val_rate:,.0f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement (default 3, smoke 0.3)")
    parser.add_argument("--path", type=Path, help="also measure this shard folder (manifest.json)")
    args = parser.parse_args()
    args.seconds = args.seconds or (0.3 if args.smoke else 3.0)
    shards, tokens = (4, 1 << 20) if args.smoke else (8, 1 << 24)
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 10):
            folder = Path(tmp) / f"x{scale}"
            sparse_manifest(folder, shards * scale, tokens)
            measure(f"synthetic x{scale}", folder, args)
    if args.path:
        measure(str(args.path), args.path, args)


if __name__ == "__main__":
    main()
