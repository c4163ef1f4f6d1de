"""Alerts: what a person watching the run should know now (MetricsLogger.alert: W&B's `run.alert`, a
console line, a metrics.jsonl row).

Judged on log steps, from what the metrics callback logged (config section `alerts`):
- a loss spike: the train loss above the mean of the previous `spike_window` log steps by more than
  `spike_std` of their standard deviations (only once that window is full);
- slow training: tokens/s below `slow_fraction` of its median over the last `slow_window` log steps
  (the first `slow_warmup` log steps are not counted).
Each fires once when its condition starts and again only after it has cleared. And always: the run
stopped by a stop signal (with its checkpoint, and whether the job requeues), or by the non-finite-loss
guard (train.py reports that one, the exception ends the loop).
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from pretrain.callbacks import CheckpointCallback, MetricsCallback
from pretrain.config import AlertsSection
from pretrain.metrics import MetricsLogger
from pretrain.preemption import REQUEUE_EXIT_CODE, StopOnSignal
from pretrain.trainer import Callback, StepResult, Trainer


class _Episode:
    """True once per run of consecutive true conditions."""

    def __init__(self) -> None:
        self.active = False

    def starts(self, condition: bool) -> bool:
        started = condition and not self.active
        self.active = condition
        return started


class LossSpikeMonitor:
    def __init__(self, window: int, num_std: float):
        self.window, self.num_std = window, num_std
        self.losses: deque[float] = deque(maxlen=window)
        self._episode = _Episode()

    def update(self, loss: float | None) -> str | None:
        """The alert text when `loss` starts a spike, else None."""
        if loss is None or not math.isfinite(loss) or not self.window:
            return None
        text = None
        if len(self.losses) == self.window:
            mean, std = statistics.fmean(self.losses), statistics.pstdev(self.losses)
            if self._episode.starts(loss > mean + self.num_std * std):
                text = (f"train loss {loss:.4f} is above its mean {mean:.4f} over the last {self.window} log steps "
                        f"by {(loss - mean) / std:.1f} standard deviations (std {std:.4f}; alerts.spike_std="
                        f"{self.num_std:g})" if std else
                        f"train loss {loss:.4f} is above its constant value {mean:.4f} of the last {self.window} log steps")
        self.losses.append(loss)
        return text


class ThroughputMonitor:
    def __init__(self, fraction: float, warmup: int, window: int):
        self.fraction, self.warmup = fraction, warmup
        self.values: deque[float] = deque(maxlen=window)
        self._seen = 0
        self._episode = _Episode()

    def update(self, tokens_per_s: float | None) -> str | None:
        """The alert text when `tokens_per_s` starts falling below the fraction of the median, else None."""
        if not self.fraction or not tokens_per_s:
            return None
        self._seen += 1
        if self._seen <= self.warmup:
            return None
        text = None
        if self.values:
            median = statistics.median(self.values)
            if self._episode.starts(tokens_per_s < self.fraction * median):
                text = (f"{tokens_per_s:,.0f} tokens/s is {tokens_per_s / median:.0%} of its median {median:,.0f} over "
                        f"the last {len(self.values)} log steps (alerts.slow_fraction={self.fraction:g})")
        self.values.append(tokens_per_s)
        return text


class AlertsCallback(Callback):
    """Put it after the metrics and checkpoint callbacks: it reads what they did in the same step."""

    def __init__(self, logger: MetricsLogger, cfg: AlertsSection, metrics: MetricsCallback,
                 stop_on_signal: StopOnSignal, checkpoints: CheckpointCallback):
        self.logger, self.metrics, self.stop_on_signal, self.checkpoints = logger, metrics, stop_on_signal, checkpoints
        self.spikes = LossSpikeMonitor(cfg.spike_window, cfg.spike_std)
        self.throughput = ThroughputMonitor(cfg.slow_fraction, cfg.slow_warmup, cfg.slow_window)

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self.metrics.last is None or self.metrics.last[0] != result.step:
            return  # not a log step
        logged = self.metrics.last[1]
        if text := self.spikes.update(logged.get("train/loss")):
            self.logger.alert(result.step, "Loss spike", text, "WARN")
        if text := self.throughput.update(logged.get("speed/tokens_per_s")):
            self.logger.alert(result.step, "Training slowed down", text, "WARN")

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.stop_on_signal.stopped:
            return
        saved = self.checkpoints.durable
        where = (f"checkpoint step {saved[0]} saved to {saved[1]}" if saved and saved[0] == trainer.step
                 else "no checkpoint of this step")
        then = (f"the job exits with {REQUEUE_EXIT_CODE} and requeues: it resumes from that checkpoint"
                if self.stop_on_signal.exit_code(trainer) == REQUEUE_EXIT_CODE else "the run had reached max_steps")
        self.logger.alert(trainer.step, "Stopped by a stop signal", f"{trainer.stop_reason} at step {trainer.step}: "
                          f"{where}; {then}", "WARN")

    def non_finite_loss(self, step: int, error: Exception) -> None:
        """The run is about to end on NonFiniteLossError."""
        self.logger.alert(step, "Stopped: the loss is not finite", str(error), "ERROR")
