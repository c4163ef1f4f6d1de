"""Stop signals are recorded, not acted on mid-step; any signalled rank stops the run at the step boundary."""

import os
import signal

from pretrain.preemption import REQUEUE_EXIT_CODE, StopOnSignal, StopSignals
from pretrain.trainer import StepResult


class FakeTrainer:
    def __init__(self, step: int, max_steps: int):
        self.step, self.max_steps, self.stop_reason = step, max_steps, None


def test_a_signal_ends_the_run_at_the_next_step_boundary_with_the_requeue_code():
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        signals = StopSignals().install()
        callback = StopOnSignal(signals, rank=0)
        trainer = FakeTrainer(step=3, max_steps=10)
        callback.on_step_end(trainer, StepResult(step=3, loss=None, lr=1e-3, tokens=100, seconds=0.1))
        assert trainer.stop_reason is None and callback.exit_code(trainer) == 0
        os.kill(os.getpid(), signal.SIGUSR1)  # recorded; the process lives on
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == "SIGUSR1"
        trainer.step = 4
        callback.on_step_end(trainer, StepResult(step=4, loss=None, lr=1e-3, tokens=100, seconds=0.1))
        assert trainer.stop_reason == "stop signal (SIGUSR1)"
        assert callback.exit_code(trainer) == REQUEUE_EXIT_CODE
        trainer.step = trainer.max_steps  # the signal came with the last step: the run is complete
        assert callback.exit_code(trainer) == 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_signal_margin_shorter_than_a_step_plus_a_save_is_warned_once(capsys):
    last_save = [None]
    callback = StopOnSignal(StopSignals(), rank=0, margin_s=30, last_save_s=lambda: last_save[0])
    trainer = FakeTrainer(step=1, max_steps=10)
    callback.on_step_end(trainer, StepResult(step=1, loss=None, lr=1e-3, tokens=100, seconds=12.0))
    assert callback.margin_warning is None  # no checkpoint yet: nothing to compare
    last_save[0] = 25.0
    callback.on_step_end(trainer, StepResult(step=2, loss=None, lr=1e-3, tokens=100, seconds=2.0))
    assert "comes 30 s before the time limit, but a step plus a checkpoint take 37 s" in callback.margin_warning
    callback.on_step_end(trainer, StepResult(step=3, loss=None, lr=1e-3, tokens=100, seconds=2.0))
    assert capsys.readouterr().err.count("warning: the stop signal") == 1
    roomy = StopOnSignal(StopSignals(), rank=0, margin_s=180, last_save_s=lambda: 25.0)
    roomy.on_step_end(trainer, StepResult(step=1, loss=None, lr=1e-3, tokens=100, seconds=12.0))
    assert roomy.margin_warning is None
