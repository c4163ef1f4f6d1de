"""Stopping cleanly when the scheduler asks, so that a requeued job resumes where this one stopped.

Slurm sends SIGUSR1 ahead of a time limit (`#SBATCH --signal=B:USR1@N`, forwarded to the ranks by
slurm/train.sbatch) and SIGTERM on preemption or `scancel`. The handler only records the signal. At
the next step boundary the ranks agree (one signalled rank stops them all, so no rank is left waiting
in a collective; one small host-side collective per step, see pretrain.collectives), the checkpoint callback saves, and the process exits with REQUEUE_EXIT_CODE: the
batch script then requeues the job. A run that reached max_steps exits 0 even if signalled.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping

from pretrain import collectives
from pretrain.trainer import Callback, StepResult, Trainer

REQUEUE_EXIT_CODE = 75  # sysexits EX_TEMPFAIL: stopped early on request, resume me
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopSignals:
    """Records the first stop signal this process receives. Install it first thing: Python's default
    action for SIGUSR1 kills the process, checkpoint or not."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: str | None = None

    def install(self) -> "StopSignals":
        for sig in self.signals:
            signal.signal(sig, self._record)
            # restart interrupted system calls: the signal may land in a thread blocked in a collective
            signal.siginterrupt(sig, False)
        return self

    def _record(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name


class StopOnSignal(Callback):
    """At every step boundary: did any rank receive a stop signal? Then end the run after this step.
    Put it before the checkpoint callback, which saves when `trainer.stop_reason` is set.

    `margin_s`: how long before the time limit the scheduler signals (PRETRAIN_SIGNAL_MARGIN_S, exported
    by slurm/train.sbatch); `last_save_s`: how long the last checkpoint took to become durable. Once both
    are known, rank 0 warns (once) if the slowest step plus that save would not fit in the margin."""

    def __init__(self, signals: StopSignals, rank: int, margin_s: float | None = None,
                 last_save_s: Callable[[], float | None] = lambda: None):
        self.signals, self.rank, self.margin_s, self.last_save_s = signals, rank, margin_s, last_save_s
        self.stopped = False
        self._slowest_step_s = 0.0
        self.margin_warning: str | None = None

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        signalled_ranks = collectives.all_reduce([1.0 if self.signals.received else 0.0])[0]
        if signalled_ranks and trainer.stop_reason is None:
            self.stopped = True
            trainer.stop_reason = f"stop signal ({self.signals.received or 'received by another rank'})"
            if self.rank == 0:
                print(f"step {trainer.step}: {trainer.stop_reason}: checkpointing and stopping", flush=True)
        self._slowest_step_s = max(self._slowest_step_s, result.seconds)
        self._check_margin()

    def _check_margin(self) -> None:
        save_s = self.last_save_s()
        if self.margin_warning is not None or self.margin_s is None or save_s is None:
            return
        needed = self._slowest_step_s + save_s
        if needed > self.margin_s:
            self.margin_warning = (
                f"warning: the stop signal comes {self.margin_s:.0f} s before the time limit, but a step plus a "
                f"checkpoint take {needed:.0f} s ({self._slowest_step_s:.1f} + {save_s:.1f}): a job stopped at its "
                f"limit may lose the steps since its last checkpoint. Raise pretrain.submit --signal-seconds "
                f"(or #SBATCH --signal=B:USR1@N and PRETRAIN_SIGNAL_MARGIN_S)")
            if self.rank == 0:
                print(self.margin_warning, file=sys.stderr, flush=True)

    def exit_code(self, trainer: Trainer) -> int:
        return REQUEUE_EXIT_CODE if self.stopped and trainer.step < trainer.max_steps else 0


def signal_margin_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """PRETRAIN_SIGNAL_MARGIN_S, when the batch script set it."""
    value = (os.environ if environ is None else environ).get("PRETRAIN_SIGNAL_MARGIN_S")
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(f"PRETRAIN_SIGNAL_MARGIN_S={value!r}: not a number of seconds") from None
