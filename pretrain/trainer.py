"""The training loop, kept small: one optimizer step at a time; callbacks do the rest
(logging and speed, evaluation, checkpoints, stop requests).

A step queues its work on the device without waiting for it: the loss stays a device tensor (the
metrics callback reduces it on log steps only), the token count follows from the batch shape, and a
step whose gradients are not finite is skipped by DeepSpeed's optimizer on every rank alike (it
reduces the gradient norm first), which the trainer reads from `engine.skipped_steps`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from pretrain.sources import add_source_sums


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite steps: the run stops without writing a checkpoint."""


@dataclass
class StepResult:
    step: int  # optimizer steps done, this one included
    loss: torch.Tensor | None  # this rank's mean loss over the step's micro-batches, on the device; None when skipped
    lr: float
    tokens: int  # tokens of this step, all ranks
    seconds: float
    skipped: bool = False
    # on log steps: this rank's [source, (loss summed over tokens, tokens)] on the device (pretrain.sources)
    source_losses: torch.Tensor | None = None


def is_log_step(step: int, log_every: int, max_steps: int) -> bool:
    """Every `log_every`-th step and the last one (log_every 0: never)."""
    return log_every > 0 and (step % log_every == 0 or step == max_steps)


class Callback:
    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer", result: StepResult) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class Trainer:
    engine: Any  # deepspeed.DeepSpeedEngine (its forward returns the loss given targets)
    batches: Any  # pretrain.device_batches.DeviceBatches: iterator of (inputs, targets) on the device, state_dict()
    grad_accum: int
    max_steps: int
    world_size: int = 1  # data-parallel ranks: every rank's micro-batches have the same shape
    log_every: int = 0  # steps that also compute the per-source losses (see `is_log_step`); 0 = none
    callbacks: list[Callback] = field(default_factory=list)
    max_consecutive_nonfinite: int = 5
    step: int = 0
    stop_reason: str | None = None  # a callback sets it to end the run after the current step
    extra_state: dict = field(default_factory=dict)  # saved with checkpoints (e.g. the W&B run id)
    _nonfinite_streak: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "data": self.batches.state_dict(), "nonfinite_streak": self._nonfinite_streak,
                "data_samples_per_source": self.batches.samples_per_source(), **self.extra_state}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.batches.load_state_dict(state["data"], state.get("data_samples_per_source"))
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
        """One optimizer step over `grad_accum` micro-batches, with no host synchronisation of ours.

        When the step's gradients are not finite on any rank (a non-finite loss included), DeepSpeed's
        optimizer skips the whole update on every rank and leaves the learning-rate schedule where it was."""
        start = time.perf_counter()
        skipped_before = self.engine.skipped_steps
        per_source = is_log_step(self.step + 1, self.log_every, self.max_steps)
        loss_sum, source_sums, tokens = None, None, 0
        for _ in range(self.grad_accum):
            inputs, targets = next(self.batches)
            tokens += targets.numel()
            if per_source:
                token_losses = self.engine(inputs, targets, reduction="none")
                loss = token_losses.mean()  # the train loader's targets are all real tokens: none is ignored
                source_sums = add_source_sums(source_sums, token_losses, self.batches.sources,
                                              len(self.batches.source_names))
            else:
                loss = self.engine(inputs, targets)
            self.engine.backward(loss)
            self.engine.step()  # an optimizer step at the accumulation boundary only
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        self.step += 1
        seconds = time.perf_counter() - start
        tokens *= self.world_size
        if self.engine.skipped_steps > skipped_before:
            self._nonfinite_streak += 1
            if self._nonfinite_streak >= self.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f"the loss was not finite in {self._nonfinite_streak} consecutive steps (last: step {self.step}); "
                    "stopping without a checkpoint: the last good one is kept. Lower optim.lr, check the data, or "
                    "resume from an earlier checkpoint")
            return StepResult(self.step, None, self.current_lr(), tokens, seconds, skipped=True)
        self._nonfinite_streak = 0
        return StepResult(self.step, loss_sum / self.grad_accum, self.current_lr(), tokens, seconds,
                          source_losses=source_sums)

    def current_lr(self) -> float:
        return float(self.engine.get_lr()[0])
