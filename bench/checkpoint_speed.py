"""Checkpoint stall: how long the training loop waits per save, written synchronously vs in the background.

`pretrain.train` runs twice on the same shards, saving every 2 steps, with `checkpoint.async_save=false`
(the loop waits for every file to be written) and `=true` (it waits for the copy of the state to host
memory; the files are written by a thread and the save is marked complete before the next one starts).
Figures: `checkpoint/stall_s` and `checkpoint/save_s` from metrics.jsonl (median over the saves).

    python -m bench.checkpoint_speed --data outputs/data              # model=125m: ~1.6 GB per checkpoint
    python -m bench.checkpoint_speed --data outputs/data --smoke      # model=tiny (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, out: Path, model: str, async_save: bool) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "pretrain.train", f"data.path={data}", f"output_dir={out}", f"model={model}",
           "model.max_seq_len=64", "max_steps=6", "checkpoint.every_steps=2", "checkpoint.keep_last=0",
           f"checkpoint.async_save={str(async_save).lower()}", "deepspeed.precision=fp32", "batch.micro_batch_size=1",
           "logging.mode=disabled", "eval.every_steps=0", "checkpoint.resume=none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stalls = [r["checkpoint/stall_s"] for r in rows if "checkpoint/stall_s" in r]
    saves = [r["checkpoint/save_s"] for r in rows if "checkpoint/save_s" in r]
    return statistics.median(stalls), statistics.median(saves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "outputs" / "data")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if not (args.data / "manifest.json").exists():
        raise SystemExit(f"{args.data} has no manifest.json: run python -m data_pipeline first (or pass --data)")
    model = "tiny" if args.smoke else "125m"
    with tempfile.TemporaryDirectory() as tmp:
        sync_stall, sync_save = run(args.data, Path(tmp) / "sync", model, False)
        async_stall, async_save = run(args.data, Path(tmp) / "async", model, True)
    print(f"model={model}, 3 saves each: synchronous: the loop waits {sync_stall:.2f} s per save ({sync_save:.2f} s to "
          f"durable); background: it waits {async_stall:.2f} s ({async_save:.2f} s to durable): stall "
          f"{async_stall / sync_stall:.2f}x of the synchronous save's")


if __name__ == "__main__":
    main()
