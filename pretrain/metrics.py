"""Metrics: the console line and Weights & Biases (online, offline or disabled); MFU against a
documented peak-FLOPs table. Only rank 0 logs.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Any

# Dense bf16 peak TFLOP/s (vendor data sheets, without sparsity). MFU = achieved model FLOP/s / peak.
PEAK_TFLOPS_BF16 = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756
    "A100": 312.0,
    "A10G": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
}
_SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd|credential)", re.IGNORECASE)


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


def redact_secrets(config: Any) -> Any:
    """A copy of a nested config with every value under a secret-looking key replaced."""
    if isinstance(config, dict):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) else redact_secrets(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact_secrets(v) for v in config]
    return config


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

    def __init__(self, *, rank: int, mode: str, project: str, run_name: str | None, entity: str | None,
                 config: dict, run_id: str | None, output_dir: str, tags: list[str] | None = None):
        self.rank = rank
        self.run = None
        self._last_console = 0.0
        if rank != 0:
            return
        os.makedirs(output_dir, exist_ok=True)
        # every logged value at full precision, one JSON object per line: for scripts and tests
        self._jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "a", encoding="utf-8")
        if mode == "disabled":  # no W&B run at all (nor an import of wandb)
            return
        import wandb

        self.run = wandb.init(
            project=project, entity=entity, name=run_name, id=run_id, resume="allow", mode=mode,
            dir=output_dir, config=redact_secrets(config), tags=tags or None,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

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

    def finish(self) -> None:
        if self.rank == 0:
            self._jsonl.close()
        if self.run is not None:
            self.run.finish()
            self.run = None
