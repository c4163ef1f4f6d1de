"""What the trainer does besides stepping: metrics and speed, evaluation, checkpoints."""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from pretrain import checkpoint, collectives
from pretrain.metrics import MetricsLogger, mfu
from pretrain.sources import source_loss_metrics, source_mix_metrics
from pretrain.trainer import Callback, StepResult, Trainer, is_log_step


def memory_metrics() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"memory/gpu_max_allocated_gb": torch.cuda.max_memory_allocated() / 2**30}
    return {"memory/peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class MetricsCallback(Callback):
    """Loss, learning rate, grad norm, tokens/s, MFU and memory every `log_every` steps (averaged over them).

    The losses of the steps in between stay on the device, summed; a log step copies that sum, with
    the step's per-source loss sums, to the host and reduces them over the ranks in one small
    collective. Also per source: tokens consumed, their share, the configured weight (pretrain.sources).
    `constants` (e.g. the restart count) go with every log step too. `last`: (step, metrics) of the last
    log step, for the alert monitors."""

    def __init__(self, logger: MetricsLogger, log_every: int, flops_per_token: float, peak_tflops: float | None,
                 num_devices: int, constants: dict | None = None):
        self.logger, self.log_every, self.constants = logger, max(1, log_every), dict(constants or {})
        self.flops_per_token, self.peak, self.num_devices = flops_per_token, peak_tflops, num_devices
        self._loss_sum: torch.Tensor | None = None
        self._steps, self._tokens, self._seconds, self._skipped = 0, 0, 0.0, 0
        self.last: tuple[int, dict] | None = None

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.skipped:
            self._skipped += 1
            self.logger.log(result.step, {"train/skipped_nonfinite_steps": self._skipped, "lr": result.lr})
        else:
            self._loss_sum = result.loss if self._loss_sum is None else self._loss_sum + result.loss
            self._steps += 1
        self._tokens += result.tokens
        self._seconds += result.seconds
        if not is_log_step(result.step, self.log_every, trainer.max_steps):
            return
        # every rank skips the same steps and has per-source sums on the same steps: one reduction, entered alike
        parts = ([self._loss_sum.reshape(1).double()] if self._steps else []) + (
            [result.source_losses.flatten()] if result.source_losses is not None else [])
        reduced = collectives.all_reduce(torch.cat(parts)) if parts else []
        loss = reduced[0] / (self._steps * self.num_devices) if self._steps else None
        tokens_per_s = self._tokens / self._seconds if self._seconds else 0.0
        grad_norm = trainer.engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None and math.isfinite(float(grad_norm)) else None
        metrics = {
            "train/loss": loss,
            "lr": result.lr,
            "train/grad_norm": grad_norm,
            "speed/tokens_per_s": tokens_per_s,
            "speed/mfu": mfu(self.flops_per_token, tokens_per_s, self.peak, self.num_devices),
            "train/tokens": trainer.batches.tokens_consumed,
            **memory_metrics(),
            **self.constants,
            # W&B and metrics.jsonl only: the console line shows its own fields (metrics.CONSOLE_FIELDS)
            **source_mix_metrics(trainer.batches.tokens_per_source(), trainer.batches.source_weights),
        }
        if result.source_losses is not None:
            metrics.update(source_loss_metrics(trainer.batches.source_names, reduced[1 if self._steps else 0:]))
        self.logger.log(result.step, metrics)
        self.last = (result.step, metrics)
        self._loss_sum, self._steps, self._tokens, self._seconds = None, 0, 0, 0.0


class EvalCallback(Callback):
    """Evaluates every `every_steps` and at the end; the last validation loss goes into the trainer state
    (saved with the next checkpoint: its artifact's metadata)."""

    def __init__(self, evaluate, logger: MetricsLogger, every_steps: int):
        self.evaluate, self.logger, self.every_steps = evaluate, logger, every_steps

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self.every_steps and (result.step % self.every_steps == 0 or result.step == trainer.max_steps):
            metrics = self.evaluate()
            if "val/loss" in metrics:
                trainer.extra_state["val_loss"] = metrics["val/loss"]
            self.logger.log(result.step, metrics)


class _PendingSave(NamedTuple):
    path: Path
    step: int
    trainer_state: dict  # as it was when the save began
    start: float  # time.perf_counter()
    stall_s: float


class CheckpointCallback(Callback):
    """Every `every_steps`, when the run is asked to stop (preemption), and at the end.

    With an asynchronous writer (pretrain/checkpoint_writer.py) a save stalls training only while the
    state is copied off the device; it is marked complete at the first step end at which every rank's
    files are durable (one small collective per step while a save is pending), at the latest when the
    next save starts or the run ends. Logs `checkpoint/stall_s` (the training loop's wait) and
    `checkpoint/save_s` (until durable) for each save."""

    def __init__(self, root: str, every_steps: int, keep_last: int, rank: int, logger: MetricsLogger | None = None,
                 on_durable: Callable[[Path, int, dict], None] | None = None):
        self.root, self.every_steps, self.keep_last, self.rank, self.logger = root, every_steps, keep_last, rank, logger
        self.on_durable = on_durable  # (folder, step, trainer state) of each checkpoint once complete
        self._saved_step = -1
        self._pending: _PendingSave | None = None
        self.last_save_s: float | None = None
        self.durable: tuple[int, Path] | None = None  # (step, folder) of the last checkpoint completed

    def _save(self, trainer: Trainer) -> None:
        if trainer.step == self._saved_step:
            return
        self.finish_pending(trainer)  # one save at a time
        start = time.perf_counter()
        path = checkpoint.begin_save(trainer.engine, self.root, trainer.step, self.rank)
        stall = time.perf_counter() - start
        self._pending = _PendingSave(path, trainer.step, trainer.state_dict(), start, stall)
        self._saved_step = trainer.step
        self._log(trainer.step, {"checkpoint/stall_s": stall})
        if not checkpoint.writes_in_background(trainer.engine):  # written already: complete it now
            self.finish_pending(trainer)

    def finish_pending(self, trainer: Trainer) -> None:
        """Wait for the pending save's files on every rank, then mark it complete."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        checkpoint.finish_save(trainer.engine, pending.path, pending.step, pending.trainer_state, self.rank,
                               self.keep_last)
        writer_end = getattr(trainer.engine.checkpoint_engine, "last_write_end", None)
        end = writer_end if writer_end and writer_end > pending.start else time.perf_counter()
        self.last_save_s = end - pending.start
        self._log(trainer.step, {"checkpoint/save_s": self.last_save_s})
        if self.rank == 0:
            print(f"checkpoint step {pending.step} -> {pending.path} (training waited {pending.stall_s:.2f} s; "
                  f"durable after {self.last_save_s:.2f} s)", flush=True)
        self.durable = (pending.step, pending.path)
        if self.on_durable is not None:
            self.on_durable(pending.path, pending.step, pending.trainer_state)

    def _log(self, step: int, metrics: dict) -> None:
        if self.logger is not None:
            self.logger.log(step, metrics)

    def on_train_start(self, trainer: Trainer) -> None:
        self._saved_step = trainer.step  # resumed from it, or nothing to save yet

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if (self.every_steps and result.step % self.every_steps == 0) or trainer.stop_reason is not None:
            self._save(trainer)
        elif self._pending is not None:
            # mark it complete as soon as every rank's writer is done: a crash loses no more than it must
            idle = trainer.engine.checkpoint_engine.idle()
            if collectives.all_reduce([1.0 if idle else 0.0], op="min")[0] == 1.0:
                self.finish_pending(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self._save(trainer)
        self.finish_pending(trainer)


class ProfileCallback(Callback):
    """Profile optimizer step `step` (torch.profiler, CPU and CUDA activity): a Chrome trace and a table
    of the operators that took the most time, per rank, under `out_dir` (open the trace in Perfetto)."""

    def __init__(self, step: int, out_dir: str, rank: int):
        self.step, self.out_dir, self.rank = step, out_dir, rank
        self._profiler = None

    def _start_before(self, next_step: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        if next_step == self.step:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self._profiler = profile(activities=activities)
            self._profiler.__enter__()

    def on_train_start(self, trainer: Trainer) -> None:
        self._start_before(trainer.step + 1)

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.step == self.step and self._profiler is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._profiler.__exit__(None, None, None)
            os.makedirs(self.out_dir, exist_ok=True)
            self._profiler.export_chrome_trace(os.path.join(self.out_dir, f"trace_rank{self.rank}.json"))
            sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
            with open(os.path.join(self.out_dir, f"ops_rank{self.rank}.txt"), "w", encoding="utf-8") as fh:
                fh.write(self._profiler.key_averages().table(sort_by=sort, row_limit=30))
            self._profiler = None
            if self.rank == 0:
                print(f"step {result.step} profiled: {self.out_dir}/trace_rank0.json, ops_rank0.txt", flush=True)
        self._start_before(result.step + 1)
