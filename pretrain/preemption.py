"""Stopping cleanly when the scheduler asks, so that a requeued job resumes where this one stopped.

Slurm sends SIGUSR1 ahead of a time limit (`#SBATCH --signal=B:USR1@N`, forwarded to the ranks by
slurm/train.sbatch) and SIGTERM on preemption or `scancel`. The handler only records the signal. At
the next step boundary the ranks agree (one signalled rank stops them all, so no rank is left waiting
in a collective; one small host-side collective per step, see pretrain.collectives), the checkpoint callback saves, and the process exits with REQUEUE_EXIT_CODE: the
batch script then requeues the job. A run that reached max_steps exits 0 even if signalled.
"""

from __future__ import annotations

import signal

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
    Put it before the checkpoint callback, which saves when `trainer.stop_reason` is set."""

    def __init__(self, signals: StopSignals, rank: int):
        self.signals, self.rank = signals, rank
        self.stopped = False

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        signalled_ranks = collectives.all_reduce([1.0 if self.signals.received else 0.0])[0]
        if signalled_ranks and trainer.stop_reason is None:
            self.stopped = True
            trainer.stop_reason = f"stop signal ({self.signals.received or 'received by another rank'})"
            if self.rank == 0:
                print(f"step {trainer.step}: {trainer.stop_reason}: checkpointing and stopping", flush=True)

    def exit_code(self, trainer: Trainer) -> int:
        return REQUEUE_EXIT_CODE if self.stopped and trainer.step < trainer.max_steps else 0
