import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

# the same quiet console as `python -m data_pipeline`
os.environ.setdefault("LOGURU_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


SAMPLE_OVERRIDES = (f"input_dir={SAMPLE}", "executor.tasks=3", "tokenizer.vocab_size=2048",
                    "shards.formats=[datatrove,megatron]", "shards.max_tokens_per_shard=400000")
# what a run must reproduce byte for byte
OUTPUT_FILES = ("manifest.json", "work/*/audit/*.jsonl.gz", "tokenizer/*", "train/*", "val/*")


def output_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for pattern in OUTPUT_FILES for p in sorted(out.glob(pattern))}


def pipeline_command(output_dir: Path, *overrides: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "data_pipeline", f"output_dir={output_dir}", "progress=false", *overrides]


def run_pipeline_cli(output_dir: Path, *overrides: str, check: bool = True, python_flags: tuple[str, ...] = (),
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(pipeline_command(output_dir, *overrides, python_flags=python_flags), cwd=ROOT,
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_docs(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.jsonl")):
        docs += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return docs


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """The whole pipeline on the bundled sample, once per test session (its W&B run offline, in out/wandb)."""
    out = tmp_path_factory.mktemp("sample_run") / "out"
    run_pipeline_cli(out, *SAMPLE_OVERRIDES)
    return out


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The local Slurm cluster (see tests/slurm_cluster.py): skips only when Slurm is not installed."""
    return SlurmCluster.connect()
