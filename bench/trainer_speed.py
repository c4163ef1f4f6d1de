"""Trainer overhead, measured as ratios within one run:

1. `pretrain.train`, 1 process (its default deepspeed=zero2), vs a bare PyTorch loop (same model, AdamW,
   batch, threads, batch fetching included): >= 0.95x
2. `pretrain.train`, 2 ranks under ZeRO-2, vs torch DDP with 2 ranks on the same model: >= 0.9x
3. samples/s the data loader delivers vs samples/s training consumes: >= 100x

Needs a shard folder (`python -m data_pipeline` writes outputs/data).

    python -m bench.trainer_speed                  # 60 steps each, 3 alternating pairs, model=tiny, fp32
    python -m bench.trainer_speed --smoke          # 6 steps each (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "LOGURU_LEVEL": "WARNING"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_overrides(args) -> list[str]:
    return [f"data.path={args.data}", f"model={args.model}", "deepspeed.precision=fp32", f"max_steps={args.steps}",
            "optim.warmup_steps=1", f"batch.micro_batch_size={args.micro_batch}", "logging.mode=disabled",
            f"logging.log_every={args.steps}", "eval.every_steps=0", "checkpoint.every_steps=0", "checkpoint.resume=none"]


def trainer_tokens_per_s(out: Path, nproc: int, deepspeed: str, args) -> float:
    launcher = [sys.executable, "-m", "pretrain.train"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
        "-m", "pretrain.train"]
    cmd = launcher + [f"output_dir={out}", f"deepspeed={deepspeed}", *common_overrides(args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV)
    if proc.returncode:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "speed/tokens_per_s" in r][-1]["speed/tokens_per_s"]  # averaged over all steps


def baseline_tokens_per_s(nproc: int, args) -> float:
    """Bare PyTorch (1 process) or torch DDP (nproc), run by this script as its own worker."""
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    cmd = launcher + ["-m", "bench.trainer_speed", "--worker", "--data", str(args.data), "--model", args.model, "--steps", str(args.steps),
                      "--micro-batch", str(args.micro_batch)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV)
    if proc.returncode:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def worker(args) -> None:
    """The baseline loop: model, data and AdamW built like the trainer builds them, nothing else."""
    import torch
    import torch.distributed as dist

    from pretrain.config import compose
    from pretrain.data import DataConfig, build_train_batches
    from pretrain.model import Transformer
    from pretrain.optim import build_optimizer
    from shard_format import manifest as manifest_lib

    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
    cfg = compose([f"model={args.model}", f"data.path={args.data}"])
    vocab = manifest_lib.read(args.data)["tokenizer"]["vocab_size"]
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model.with_vocab(vocab))
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, cfg.optim, cfg.deepspeed)
    batches = build_train_batches(DataConfig(args.data, cfg.data.seq_len), args.micro_batch, rank, world)
    elapsed, tokens = 0.0, 0
    for _ in range(args.steps):
        start = time.perf_counter()  # like the trainer's step time, it includes fetching the batch
        inputs, targets = next(batches)
        loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        elapsed += time.perf_counter() - start
        tokens += targets.numel() * world
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        print(tokens / elapsed)


def compare(baseline_name: str, ours_name: str, target: float, args, baseline, ours) -> float:
    """Baseline and ours alternately, `args.repeats` times: on a shared machine the speed drifts by several
    percent between runs, so the median of the per-pair ratios is the figure. Returns ours' median speed."""
    pairs = []
    for i in range(args.repeats):
        pairs.append((baseline(), ours(i)))
    ratios = sorted(o / b for b, o in pairs)
    median = statistics.median(ratios)
    print(f"{baseline_name} {statistics.median(b for b, _ in pairs):.0f} tok/s, {ours_name} "
          f"{statistics.median(o for _, o in pairs):.0f} tok/s: {median:.2f}x (target >= {target}x; "
          f"ratios of {len(pairs)} alternating pairs: {', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
    return statistics.median(o for _, o in pairs)


def loader_samples_per_s(args, seconds: float) -> float:
    from pretrain.config import compose
    from pretrain.data import DataConfig, build_train_batches

    cfg = compose([f"model={args.model}", f"data.path={args.data}"])
    batches = build_train_batches(DataConfig(args.data, cfg.data.seq_len), args.micro_batch)
    next(batches)  # builds the epoch order
    start, samples = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(batches)
        samples += args.micro_batch
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "outputs" / "data")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="alternating baseline/ours pairs per comparison")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args.steps, args.repeats = 6, 1
    if not (args.data / "manifest.json").exists():
        raise SystemExit(f"{args.data} has no manifest.json: run python -m data_pipeline first (or pass --data)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours1 = compare("1 process : bare PyTorch", "pretrain.train", 0.95, args, lambda: baseline_tokens_per_s(1, args),
                        lambda i: trainer_tokens_per_s(tmp / f"one{i}", 1, "zero2", args))
        compare("2 ranks   : torch DDP", "ZeRO-2", 0.9, args, lambda: baseline_tokens_per_s(2, args),
                lambda i: trainer_tokens_per_s(tmp / f"two{i}", 2, "zero2", args))
    consumed = ours1 / _seq_len(args)  # samples/s one training process takes in
    delivered = loader_samples_per_s(args, 0.5 if args.smoke else 3.0)
    print(f"data loader: {delivered:.0f} samples/s delivered, training consumes {consumed:.1f}: {delivered / consumed:.0f}x "
          f"(target >= 100x)")


def _seq_len(args) -> int:
    from pretrain.config import compose

    return compose([f"model={args.model}", f"data.path={args.data}"]).data.seq_len


if __name__ == "__main__":
    main()
