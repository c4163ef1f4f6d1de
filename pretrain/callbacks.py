"""What the trainer does besides stepping: metrics and speed, evaluation, checkpoints."""

from __future__ import annotations

import resource
import time

import torch

from pretrain import checkpoint
from pretrain.metrics import MetricsLogger, mfu
from pretrain.trainer import Callback, StepResult, Trainer


def memory_metrics() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"memory/gpu_max_allocated_gb": torch.cuda.max_memory_allocated() / 2**30}
    return {"memory/peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class MetricsCallback(Callback):
    """Loss, learning rate, grad norm, tokens/s, MFU and memory every `log_every` steps (averaged over them)."""

    def __init__(self, logger: MetricsLogger, log_every: int, flops_per_token: float, peak_tflops: float | None,
                 num_devices: int):
        self.logger, self.log_every = logger, max(1, log_every)
        self.flops_per_token, self.peak, self.num_devices = flops_per_token, peak_tflops, num_devices
        self._losses: list[float] = []
        self._tokens, self._seconds, self._skipped = 0, 0.0, 0

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.skipped:
            self._skipped += 1
            self.logger.log(result.step, {"train/skipped_nonfinite_steps": self._skipped, "lr": result.lr})
        else:
            self._losses.append(result.loss)
        self._tokens += result.tokens
        self._seconds += result.seconds
        if result.step % self.log_every and result.step != trainer.max_steps:
            return
        tokens_per_s = self._tokens / self._seconds if self._seconds else 0.0
        util = mfu(self.flops_per_token, tokens_per_s, self.peak, self.num_devices)
        metrics = {
            "train/loss": sum(self._losses) / len(self._losses) if self._losses else None,
            "lr": result.lr,
            "train/grad_norm": result.grad_norm,
            "speed/tokens_per_s": tokens_per_s,
            "speed/mfu": util,
            "train/tokens": trainer.batches.tokens_consumed,
            **memory_metrics(),
        }
        self.logger.log(result.step, metrics)
        self._losses, self._tokens, self._seconds = [], 0, 0.0


class EvalCallback(Callback):
    def __init__(self, evaluate, logger: MetricsLogger, every_steps: int):
        self.evaluate, self.logger, self.every_steps = evaluate, logger, every_steps

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self.every_steps and (result.step % self.every_steps == 0 or result.step == trainer.max_steps):
            self.logger.log(result.step, self.evaluate())


class CheckpointCallback(Callback):
    """Every `every_steps`, when the run is asked to stop (preemption), and at the end."""

    def __init__(self, root: str, every_steps: int, keep_last: int, rank: int):
        self.root, self.every_steps, self.keep_last, self.rank = root, every_steps, keep_last, rank
        self._saved_step = -1

    def _save(self, trainer: Trainer) -> None:
        if trainer.step != self._saved_step:
            start = time.perf_counter()
            path = checkpoint.save(trainer.engine, self.root, trainer.step, trainer.state_dict(), self.rank, self.keep_last)
            self._saved_step = trainer.step
            if self.rank == 0:
                print(f"checkpoint step {trainer.step} -> {path} ({time.perf_counter() - start:.1f}s)", flush=True)

    def on_train_start(self, trainer: Trainer) -> None:
        self._saved_step = trainer.step  # resumed from it, or nothing to save yet

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if (self.every_steps and result.step % self.every_steps == 0) or trainer.stop_reason is not None:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self._save(trainer)
