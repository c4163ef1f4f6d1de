"""Alerts: the loss-spike and throughput monitors on synthetic sequences, and a forced loss spike
through the trainer loop into an offline W&B run (alert record), the console and metrics.jsonl."""

from __future__ import annotations

import json

import torch

from monitoring.config import LoggingConfig
from pretrain.alerts import AlertsCallback, LossSpikeMonitor, ThroughputMonitor
from pretrain.callbacks import CheckpointCallback, MetricsCallback
from pretrain.config import AlertsSection
from pretrain.data import DataConfig, build_train_batches
from pretrain.device_batches import DeviceBatches
from pretrain.metrics import MetricsLogger
from pretrain.preemption import StopOnSignal, StopSignals
from pretrain.trainer import Trainer

from .test_device_paths import MICRO, SEQ, StandInEngine
from .wandb_records import records


def test_a_loss_spike_alerts_once_the_window_is_full_and_once_per_spike():
    monitor = LossSpikeMonitor(window=5, num_std=3.0)
    steady = [3.0, 3.02, 2.98, 3.01, 2.99]
    assert [monitor.update(v) for v in [3.0, 9.0, 3.0, 3.0, 3.0]] == [None] * 5  # 9.0: the window was not full
    monitor = LossSpikeMonitor(window=5, num_std=3.0)
    assert [monitor.update(v) for v in steady] == [None] * 5
    assert monitor.update(3.03) is None  # within 3 std (std 0.014, mean 3.0)
    text = monitor.update(3.5)
    assert text is not None and "3.5000 is above its mean" in text and "alerts.spike_std=3" in text
    assert monitor.update(3.6) is None  # the same spike
    for v in steady * 2:
        monitor.update(v)  # cleared
    assert monitor.update(4.0) is not None  # a new spike
    assert monitor.update(float("nan")) is None and monitor.update(None) is None


def test_tokens_per_second_below_a_fraction_of_its_median_alerts_after_the_warmup():
    monitor = ThroughputMonitor(fraction=0.5, warmup=2, window=4)
    assert [monitor.update(v) for v in [10.0, 20.0]] == [None, None]  # warm-up: not counted
    assert [monitor.update(v) for v in [1000.0, 1100.0, 900.0, 1000.0]] == [None] * 4
    text = monitor.update(400.0)
    assert text is not None and "400 tokens/s is 40% of its median 1,000" in text
    assert monitor.update(300.0) is None  # still slow: one alert
    assert monitor.update(1000.0) is None and monitor.update(1000.0) is None
    assert monitor.update(100.0) is not None
    assert ThroughputMonitor(fraction=0.0, warmup=0, window=4).update(1.0) is None  # off


class SpikeAtStep(StandInEngine):
    """Loss 1.0 / 1.01 on alternate steps, 100x at optimizer step `spike`."""

    def __init__(self, spike: int, grad_accum: int):
        super().__init__(None, torch.device("cpu"), grad_accum)
        self.spike = spike

    def __call__(self, inputs, targets, reduction="mean"):
        step = self.micro_steps // self.grad_accum + 1
        scale = (100.0 if step == self.spike else 1.0) * (1.0 + 0.01 * (step % 2))
        return super().__call__(inputs, targets, reduction) * scale


def test_a_forced_loss_spike_alerts_in_wandb_the_console_and_metrics_jsonl(sample_run, tmp_path, capsys):
    engine = SpikeAtStep(spike=6, grad_accum=1)
    batches = DeviceBatches(build_train_batches(DataConfig(str(sample_run), SEQ), MICRO), engine.device)
    logger = MetricsLogger(rank=0, logging=LoggingConfig(mode="offline"), config={}, run_id=None,
                           output_dir=str(tmp_path))
    stop = StopOnSignal(StopSignals(), 0)
    metrics = MetricsCallback(logger, 1, 1.0, None, 1)
    checkpoints = CheckpointCallback(str(tmp_path / "checkpoints"), 0, 0, 0)
    alerts = AlertsCallback(logger, AlertsSection(spike_window=3, spike_std=3.0, slow_fraction=0.0), metrics, stop,
                            checkpoints)
    trainer = Trainer(engine, batches, 1, max_steps=8, log_every=1, callbacks=[stop, metrics, alerts])
    run_file = None
    try:
        trainer.fit()
        run_file = next((tmp_path / "wandb").glob("offline-run-*")) / f"run-{logger.run_id}.wandb"
    finally:
        batches.close()
        logger.finish()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/loss"] for r in rows if "train/loss" in r][5] > 50  # the spike reached the logged loss
    assert [(r["step"], r["alert"], r["level"]) for r in rows if "alert" in r] == [(6, "Loss spike", "WARN")]
    assert "ALERT step 6: Loss spike: train loss 100." in capsys.readouterr().out
    alert_records = [r.alert for r in records(run_file) if r.WhichOneof("record_type") == "alert"]
    assert [(a.title, a.level) for a in alert_records] == [("Loss spike", "WARN")]
    assert "above its mean" in alert_records[0].text
