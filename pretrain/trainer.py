"""The training loop, kept small: one optimizer step at a time; callbacks do the rest
(logging and speed, evaluation, checkpoints, stop requests)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: the run stops without writing a checkpoint."""


def all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


@dataclass
class StepResult:
    step: int  # optimizer steps done, this one included
    loss: float | None  # mean over the step's micro-batches and ranks; None when skipped
    lr: float
    grad_norm: float | None
    tokens: int  # tokens of this step, all ranks
    seconds: float
    skipped: bool = False


class Callback:
    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer", result: StepResult) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class Trainer:
    engine: Any  # deepspeed.DeepSpeedEngine (its forward returns the loss given targets)
    batches: Any  # pretrain.data.TrainBatches: iterator of (inputs, targets), state_dict()
    grad_accum: int
    max_steps: int
    callbacks: list[Callback] = field(default_factory=list)
    max_consecutive_nonfinite: int = 5
    step: int = 0
    stop_reason: str | None = None  # a callback sets it to end the run after the current step
    extra_state: dict = field(default_factory=dict)  # saved with checkpoints (e.g. the W&B run id)
    _nonfinite_streak: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "data": self.batches.state_dict(), "nonfinite_streak": self._nonfinite_streak,
                **self.extra_state}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.batches.load_state_dict(state["data"])
        self._nonfinite_streak = int(state.get("nonfinite_streak", 0))

    def fit(self) -> None:
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.step < self.max_steps and self.stop_reason is None:
            result = self.train_step()
            for cb in self.callbacks:
                cb.on_step_end(self, result)
        for cb in self.callbacks:
            cb.on_train_end(self)

    def train_step(self) -> StepResult:
        """One optimizer step over `grad_accum` micro-batches.

        A micro-batch whose loss is not finite on any rank (all ranks agree) gets no backward pass, so it is
        left out of the update; with one micro-batch per step (grad_accum_steps=1) the whole update is
        skipped and the engine is left untouched."""
        start = time.perf_counter()
        loss_sum, finite_micro, tokens = 0.0, 0, 0
        for micro in range(self.grad_accum):
            inputs, targets = next(self.batches)
            tokens += targets.numel()
            loss = self.engine(inputs, targets)
            finite = all_reduce_sum([0.0 if torch.isfinite(loss.detach()).item() else 1.0])[0] == 0
            if finite:
                self.engine.backward(loss)
                loss_sum += loss.item()
                finite_micro += 1
            if finite or self.grad_accum > 1:
                # DeepSpeed counts micro-steps to find accumulation boundaries: with several per step each
                # must be counted; with one, leaving out step() leaves the engine exactly as it was
                self.engine.step()
        seconds = time.perf_counter() - start
        tokens = int(all_reduce_sum([float(tokens)])[0])
        self.step += 1
        if finite_micro == 0:
            self._nonfinite_streak += 1
            if self._nonfinite_streak >= self.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f"the loss was not finite in {self._nonfinite_streak} consecutive steps (last: step {self.step}); "
                    "stopping without a checkpoint: the last good one is kept. Lower optim.lr, check the data, or "
                    "resume from an earlier checkpoint")
            return StepResult(self.step, None, self.current_lr(), None, tokens, seconds, skipped=True)
        self._nonfinite_streak = 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        loss = all_reduce_sum([loss_sum / finite_micro])[0] / world
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None and math.isfinite(float(grad_norm)) else None
        return StepResult(self.step, loss, self.current_lr(), grad_norm, tokens, seconds)

    def current_lr(self) -> float:
        return float(self.engine.get_lr()[0])
