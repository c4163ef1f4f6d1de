"""Launching tiny training runs on the sample shards from tests, and reading what they wrote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import ROOT

# the settings every test run shares (tiny model, fp32-exact on CPU, a checkpoint every 4 steps)
TRAIN_OVERRIDES = ("optim.warmup_steps=2", "optim.lr=3e-3", "batch.micro_batch_size=4", "logging.log_every=1",
                   "eval.every_steps=4", "eval.batches=2", "checkpoint.every_steps=4", "checkpoint.keep_last=0")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_overrides(out: Path, shards: Path, *overrides: str) -> list[str]:
    return [f"output_dir={out}", f"data.path={shards}", *TRAIN_OVERRIDES, *overrides]


def train_command(out: Path, shards: Path, nproc: int, *overrides: str) -> list[str]:
    launcher = [sys.executable, "-m", "pretrain.train"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
        "-m", "pretrain.train"]
    return launcher + run_overrides(out, shards, *overrides)


def deepspeed_launcher_command(out: Path, shards: Path, nproc: int, *overrides: str) -> list[str]:
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc), "--master_port", str(free_port()),
                "--module", "pretrain.train"]
    return launcher + run_overrides(out, shards, *overrides)


def train(out: Path, shards: Path, nproc: int, *overrides: str, command=train_command) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(out, shards, nproc, *overrides), cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def logged(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in logged(out) if r.get("train/loss") is not None}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        time.sleep(0.1)


def wait_for_step(out: Path, step: int, timeout: float, alive=lambda: True) -> None:
    """Until metrics.jsonl holds `step`; fails when `alive()` turns false or on timeout."""
    def reached() -> bool:
        assert alive(), f"the run ended before step {step} (see {out})"
        return any(r["step"] >= step for r in logged(out))

    wait_until(reached, timeout, f"step {step} (see {out})")


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from pretrain.checkpoint import consolidated_state_dict

    return consolidated_state_dict(checkpoint)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"weights differ: {a} vs {b}"


@contextlib.contextmanager
def background_run(cmd: list[str], log: Path):
    """A training launched in its own session, its console in `log`; killed (the whole group) on exit."""
    with open(log, "w") as console:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, start_new_session=True, stdout=console, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_pids_by_rank(launcher_pid: int) -> dict[int, int]:
    """torchrun's worker processes, by the RANK in their environment."""
    workers = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher_pid)], capture_output=True, text=True).stdout.split():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next((int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")), None)
        if rank is not None:
            workers[rank] = int(pid)
    return workers
