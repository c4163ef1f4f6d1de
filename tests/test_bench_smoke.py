"""Every benchmark runs in its smoke size: it works and checks what it asserts (not its speed)."""

import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run_bench(module: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"bench.{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_pipeline_speed_smoke_asserts_identical_decisions():
    out = run_bench("pipeline_speed", "--smoke", "--tasks", "2")
    assert "paragraph: identical decisions" in out and "documents per CPU-second" in out


def test_tokenize_speed_smoke():
    assert "ratio" in run_bench("tokenize_speed", "--smoke", "--repeats", "1")


def test_pipeline_weak_scaling_smoke():
    out = run_bench("pipeline_scale", "--smoke", "--tasks", "1")
    assert "target (peak RSS at 4x" in out and "near_clusters" in out and "shard" in out


def test_trainer_speed_smoke(sample_run):
    out = run_bench("trainer_speed", "--smoke", "--data", str(sample_run))
    assert "bare PyTorch" in out and "torch DDP" in out and "data loader" in out


def test_components_speed_smoke_asserts_same_outcomes():
    out = run_bench("components_speed", "--repeats", "1", "--limit", "30")
    for component in ("HTML extraction", "Gopher repetition", "Gopher quality", "C4", "normalization", "MinHash"):
        assert component in out
    assert out.count("same outcomes") == 6


def test_checkpoint_speed_smoke(sample_run):
    out = run_bench("checkpoint_speed", "--smoke", "--data", str(sample_run))
    assert "synchronous" in out and "background" in out and "stall" in out
