"""Metrics: the console line and Weights & Biases (online, offline or disabled); MFU against a
documented peak-FLOPs table. Only rank 0 logs.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

from monitoring.config import LoggingConfig
from monitoring.console import human_count, percent
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


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


# What a console line shows, in this order: metric key, label, format. Everything else that is logged
# (per-source numbers, perplexities, checkpoint timings) goes to W&B and metrics.jsonl only.
CONSOLE_FIELDS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("train/loss", "loss", _fixed(3)),
    ("lr", "lr", lambda value: f"{value:.1e}"),
    ("train/grad_norm", "grad norm", _fixed(2)),
    ("speed/tokens_per_s", "tokens/s", lambda value: f"{value:,.0f}"),
    ("speed/mfu", "mfu", percent),
    ("train/tokens", "tokens", human_count),
    ("memory/gpu_max_allocated_gb", "gpu mem", lambda value: f"{value:.1f} GiB"),
    ("memory/peak_rss_gb", "rss", lambda value: f"{value:.2f} GiB"),
    ("train/skipped_nonfinite_steps", "skipped steps", lambda value: f"{value:,}"),
    ("val/loss", "val loss", _fixed(3)),
)
_VAL_SOURCE_LOSS = re.compile(r"val/(?P<source>[^/]+)/loss")


def format_console(step: int, metrics: dict[str, Any]) -> str | None:
    """`step 120 | loss 6.219 | lr 1.7e-03 | ... | tokens/s 4,578 | mfu 52.1%`, or None when no metric of
    the console's is among `metrics`; an unknown value (MFU on a CPU) reads n/a."""
    parts = [f"{label} {'n/a' if metrics[key] is None else fmt(metrics[key])}"
             for key, label, fmt in CONSOLE_FIELDS if key in metrics]
    parts += [f"{match['source']} {metrics[key]:.3f}" for key in metrics
              if (match := _VAL_SOURCE_LOSS.fullmatch(key)) and metrics[key] is not None]
    return " | ".join([f"step {step:>6}", *parts]) if parts else None


class MetricsLogger:
    """W&B and console sink. `mode` is online, offline or disabled; on ranks other than 0 it is a no-op."""

    def __init__(self, *, rank: int, logging: LoggingConfig, config: dict, run_id: str | None, output_dir: str):
        self.rank = rank
        self.run = None
        if rank != 0:
            return
        os.makedirs(output_dir, exist_ok=True)
        # every logged value at full precision, one JSON object per line: for scripts and tests
        self._jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "a", encoding="utf-8")
        self.run = open_run(logging, job_type="train", config=config, parent_dir=output_dir, run_id=run_id)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """To W&B and metrics.jsonl, and the console line of the fields it shows (CONSOLE_FIELDS), if any."""
        if self.rank != 0:
            return
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        line = format_console(step, metrics)
        if line:
            print(line, flush=True)

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
