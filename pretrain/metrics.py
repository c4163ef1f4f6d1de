"""Metrics: the console line and Weights & Biases (online, offline or disabled); MFU against a
documented peak-FLOPs table. Only rank 0 logs.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from monitoring.config import LoggingConfig
from monitoring.wandb_run import open_run

# Dense bf16 peak TFLOP/s (vendor data sheets, without sparsity). MFU = achieved model FLOP/s / peak.
PEAK_TFLOPS_BF16 = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756
    "A100": 312.0,
    "A10G": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
}


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """The peak of the device, or None where unknown (CPUs: MFU is reported as n/a)."""
    if override is not None:
        return override
    if not device_name:
        return None
    for key, value in PEAK_TFLOPS_BF16.items():
        if key.lower() in device_name.lower():
            return value
    return None


def mfu(flops_per_token: float, tokens_per_second: float, peak: float | None, num_devices: int = 1) -> float | None:
    if peak is None or tokens_per_second <= 0:
        return None
    return flops_per_token * tokens_per_second / (peak * 1e12 * num_devices)


def format_console(step: int, metrics: dict[str, float | None]) -> str:
    parts = [f"step {step:>6}"]
    for key, value in metrics.items():
        if value is None:
            parts.append(f"{key} n/a")
        elif isinstance(value, float) and (abs(value) < 1e-3 or abs(value) >= 1e5) and value != 0 and math.isfinite(value):
            parts.append(f"{key} {value:.3e}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)


class MetricsLogger:
    """W&B and console sink. `mode` is online, offline or disabled; on ranks other than 0 it is a no-op."""

    def __init__(self, *, rank: int, logging: LoggingConfig, config: dict, run_id: str | None, output_dir: str):
        self.rank = rank
        self.run = None
        self._last_console = 0.0
        if rank != 0:
            return
        os.makedirs(output_dir, exist_ok=True)
        # every logged value at full precision, one JSON object per line: for scripts and tests
        self._jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self.run = open_run(logging, job_type="train", config=config, parent_dir=output_dir, run_id=run_id)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_dir(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log(self, step: int, metrics: dict[str, Any], console: bool = True) -> None:
        if self.rank != 0:
            return
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        if console:
            print(format_console(step, metrics), flush=True)
            self._last_console = time.monotonic()

    def alert(self, step: int, title: str, text: str, level: str = "WARN") -> None:
        """W&B's `run.alert` (where a run is open; `title` under 64 characters, level INFO | WARN | ERROR),
        a console line and a metrics.jsonl row {"step", "alert", "text", "level"}."""
        if self.rank != 0:
            return
        if self.run is not None:
            self.run.alert(title=title, text=text, level=level, wait_duration=1)
        self._jsonl.write(json.dumps({"step": step, "alert": title, "text": text, "level": level}) + "\n")
        self._jsonl.flush()
        print(f"ALERT step {step}: {title}: {text}", flush=True)

    def finish(self) -> None:
        if self.rank == 0:
            self._jsonl.close()
        if self.run is not None:
            self.run.finish()
            self.run = None
