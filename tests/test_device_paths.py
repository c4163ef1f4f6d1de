"""The two GPU-only failures, caught on CPU:

1. batches must reach the engine's device (DeepSpeed does not move a model's inputs): a stand-in
   engine on the meta device sees every batch there;
2. our own collectives must not put CPU tensors into the default group, which on GPUs is NCCL: the
   training loop, evaluation, the stop-signal agreement and the checkpoint barriers run in a group
   registered for CUDA tensors only (`cuda:gloo`), which refuses CPU tensors as NCCL does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monitoring.config import LoggingConfig
from pretrain import collectives
from pretrain.callbacks import CheckpointCallback, EvalCallback, MetricsCallback
from pretrain.data import DataConfig, build_train_batches
from pretrain.device_batches import DeviceBatches
from pretrain.evaluate import evaluate, source_batches
from pretrain.metrics import MetricsLogger
from pretrain.model import ModelConfig, Transformer
from pretrain.preemption import StopOnSignal, StopSignals
from pretrain.trainer import Callback, Trainer
from shard_format import manifest as manifest_lib

from .train_runs import free_port

SEQ, MICRO = 32, 2


class StandInEngine:
    """What the trainer uses of a DeepSpeedEngine, around a plain module that lives on the host: it
    records where each batch arrived, runs the module on a host copy (a meta tensor has no data) and
    takes plain SGD steps at the accumulation boundary."""

    def __init__(self, module: torch.nn.Module | None, device: torch.device, grad_accum: int, lr: float = 0.05):
        self.module, self.device, self.grad_accum, self.lr = module, torch.device(device), grad_accum, lr
        self.skipped_steps, self.micro_steps = 0, 0
        self.batch_devices: set[torch.device] = set()

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        self.batch_devices |= {inputs.device, targets.device}
        if self.module is None:
            return torch.ones(targets.shape if reduction == "none" else (), requires_grad=True)
        return self.module(inputs, targets, reduction)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.module is not None and self.micro_steps % self.grad_accum == 0:
            with torch.no_grad():
                for p in self.module.parameters():
                    p -= self.lr * p.grad
                    p.grad = None

    def get_lr(self) -> list[float]:
        return [self.lr]

    def get_global_grad_norm(self) -> float:
        return 1.0

    def eval(self) -> None:
        pass

    def train(self) -> None:
        pass

    def save_checkpoint(self, root: str, tag: str) -> None:
        (Path(root) / tag).mkdir(parents=True, exist_ok=True)

    class checkpoint_engine:  # noqa: N801 - DeepSpeed's attribute: what saves each file
        save = staticmethod(torch.save)


def tiny_model(vocab_size: int) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=vocab_size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, multiple_of=16,
                                   max_seq_len=SEQ))


def test_batches_reach_the_engine_device_with_one_small_collective_per_step(sample_run, tmp_path, monkeypatch):
    calls: list[int] = []
    reduce = collectives.all_reduce
    monkeypatch.setattr(collectives, "all_reduce", lambda values, op="sum": calls.append(1) or reduce(values, op))
    grad_accum, steps, log_every = 2, 4, 2
    engine = StandInEngine(None, torch.device("meta"), grad_accum)
    batches = DeviceBatches(build_train_batches(DataConfig(str(sample_run), SEQ), MICRO), engine.device)
    logger = MetricsLogger(rank=0, logging=LoggingConfig(mode="disabled"), config={}, run_id=None,
                           output_dir=str(tmp_path))
    trainer = Trainer(engine, batches, grad_accum, max_steps=steps, log_every=log_every,
                      callbacks=[StopOnSignal(StopSignals(), 0), MetricsCallback(logger, log_every, 1.0, None, 1)])
    try:
        trainer.fit()
    finally:
        batches.close()
        logger.finish()
    assert engine.batch_devices == {torch.device("meta")}
    assert engine.micro_steps == steps * grad_accum
    assert trainer.state_dict()["data"]["samples_consumed"] == steps * grad_accum * MICRO
    # the stop-signal agreement every step, the loss on log steps only: never one per micro-batch
    assert len(calls) == steps + steps // log_every


def test_device_batches_report_the_state_of_what_they_handed_out(sample_run):
    """The reader thread runs ahead; a checkpoint must record the batches handed out, not those read."""
    plain = build_train_batches(DataConfig(str(sample_run), SEQ), MICRO)
    device_batches = DeviceBatches(build_train_batches(DataConfig(str(sample_run), SEQ), MICRO), "cpu", depth=3)
    drawn = dict.fromkeys(device_batches.source_names, 0)
    try:
        for _ in range(4):
            expected, got = next(plain), next(device_batches)
            assert all(torch.equal(e, g) for e, g in zip(expected, got))
            assert device_batches.state_dict() == plain.state_dict()
            assert device_batches.tokens_consumed == plain.tokens_consumed
            assert device_batches.sources.tolist() == plain.last_sources.tolist()  # the rows' sources
            for s in plain.last_sources.tolist():
                drawn[plain.order.sources[s]] += 1
            assert device_batches.samples_per_source() == drawn
        state, counts = device_batches.state_dict(), device_batches.samples_per_source()
        resumed = DeviceBatches(build_train_batches(DataConfig(str(sample_run), SEQ), MICRO), "cpu")
        resumed.load_state_dict(state, counts)
        assert resumed._counted[0] == state["samples_consumed"]  # carried over: nothing to recount
        assert resumed.samples_per_source() == counts
        assert all(torch.equal(e, g) for e, g in zip(next(plain), next(resumed)))
        resumed.load_state_dict(state)  # without the counts: derived from the order
        assert resumed.samples_per_source() == counts
        resumed.close()
    finally:
        device_batches.close()


class SignalAtStep(Callback):
    """Rank `rank` 'receives' a stop signal at the end of step `step` (before StopOnSignal looks)."""

    def __init__(self, signals: StopSignals, rank: int, my_rank: int, step: int):
        self.signals, self.rank, self.my_rank, self.step = signals, rank, my_rank, step

    def on_step_end(self, trainer, result) -> None:
        if self.my_rank == self.rank and result.step == self.step:
            self.signals.received = "SIGTERM"


def rank_in_a_group_that_refuses_cpu_tensors(rank: int, world: int, port: int, shards: str, out: str,
                                             backend: str = "cuda:gloo", device: str = "cpu") -> None:
    """One rank: the trainer's loop, evaluation, stop agreement and checkpoints in a `backend` group
    (cuda:gloo on CPU, nccl on a GPU), the model and batches on `device`; rank world - 1 is signalled
    at step 3. Writes what happened to OUT/rank<r>.json."""
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    result: dict = {}
    try:
        try:  # the group really refuses CPU tensors, as NCCL does
            dist.all_reduce(torch.zeros(1))
            result["refused"] = False
        except RuntimeError as exc:
            result["refused"] = "No backend type associated with device type cpu" in str(exc)
        collectives.init()
        grad_accum = 2
        loader = build_train_batches(DataConfig(shards, SEQ), MICRO, rank, world, MICRO * grad_accum * world)
        model = tiny_model(loader.dataset.vocab_size).to(device)
        engine = StandInEngine(model, torch.device(device), grad_accum)
        batches = DeviceBatches(loader, engine.device)
        logger = MetricsLogger(rank=rank, logging=LoggingConfig(mode="disabled"), config={}, run_id=None,
                               output_dir=out)
        signals = StopSignals()  # not installed: the test sets `received` itself
        sources = sorted(manifest_lib.read(shards)["splits"]["val"]["sources"])
        evals: list[dict] = []

        val_batches = source_batches(shards, sources, SEQ, MICRO, rank, world)

        def run_eval() -> dict:
            evals.append(evaluate(engine, val_batches, 2, engine.device))
            return evals[-1]

        trainer = Trainer(engine, batches, grad_accum, max_steps=50, world_size=world, log_every=2, callbacks=[
            SignalAtStep(signals, rank=world - 1, my_rank=rank, step=3), StopOnSignal(signals, rank),
            MetricsCallback(logger, 2, 1.0, None, world), EvalCallback(run_eval, logger, 2),
            CheckpointCallback(os.path.join(out, "checkpoints"), 2, 0, rank)])
        try:
            trainer.fit()
        finally:
            batches.close()
            logger.finish()
        result.update(step=trainer.step, stop_reason=trainer.stop_reason, evals=evals)
    except Exception as exc:  # reported to the test, which shows it
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        collectives.destroy()


@pytest.mark.timeout(300)
def test_training_evaluation_and_stop_agreement_in_a_group_that_refuses_cpu_tensors(sample_run, tmp_path):
    world = 2
    mp.spawn(rank_in_a_group_that_refuses_cpu_tensors, args=(world, free_port(), str(sample_run), str(tmp_path)),
             nprocs=world)
    results = check_ranks(tmp_path, world)
    assert results[0]["stop_reason"] == "stop signal (received by another rank)"
    assert results[0]["evals"] == results[1]["evals"]  # reduced over both ranks


def check_ranks(out: Path, world: int) -> list[dict]:
    """What every rank of `rank_in_a_group_that_refuses_cpu_tensors` must have done."""
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    for r, result in enumerate(results):
        assert "error" not in result, f"rank {r}: {result['error']}"
        assert result["refused"], "the cuda:gloo group accepted a CPU tensor: this test would prove nothing"
        # the last rank was signalled at step 3: every rank stops there, with a checkpoint
        assert result["step"] == 3 and result["stop_reason"].startswith("stop signal")
        assert len(result["evals"]) == 1 and result["evals"][0]["val/loss"] > 0
    assert (out / "checkpoints" / "step_00000002" / "COMPLETE").exists()
    assert (out / "checkpoints" / "step_00000003" / "COMPLETE").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/loss"] > 0
    # log step 2: the per-source losses reduced over the ranks beside the loss, the tokens per source
    quiet = next(r for r in rows if r["step"] == 2 and any(k.startswith("data/") for k in r))
    assert any(k.startswith("train/") and k.endswith("/loss") and v > 0 for k, v in quiet.items())
    assert sum(v for k, v in quiet.items() if k.startswith("data/") and k.endswith("/tokens")) == 2 * 2 * MICRO * world * SEQ
    return results
