"""Shared helpers of the benchmarks: run the pipeline CLI in a child process and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
CORPUS = ROOT / "bench" / "corpus"


@dataclass
class Measured:
    cpu_seconds: float  # user + system of the run and every process it waited for
    wall_seconds: float
    peak_rss_mb: float  # the largest resident set of any one of those processes
    report: dict


def corpus_sources(corpus: Path) -> list[str]:
    """Hydra overrides reading the benchmark corpus laid out by bench/fetch_corpus.sh (or the sample)."""
    kinds = {"web": "web", "news": "news", "books": "books", "email": "generic"}
    sources = [f"{{name: {name}, kind: {kind}, paths: ['{corpus / name}']}}" for name, kind in kinds.items() if (corpus / name).exists()]
    return ["input_dir=null", f"sources=[{', '.join(sources)}]"]


def run_pipeline(output_dir: Path, overrides: list[str], workers: int = 1) -> Measured:
    """One pipeline run in a child process. workers=1 (the default) runs every task inside that process, so
    the CPU time of all the work is the child's own rusage (which `wait4` gives per child: runs may overlap)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "data_pipeline", f"output_dir={output_dir}", "progress=false",
           f"executor.workers={workers}", *overrides]
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = output_dir.parent / f"{output_dir.name}.log"
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed ({proc.returncode}):\n{log.read_text()[-5000:]}")
    report = json.loads((output_dir / "report.json").read_text())
    return Measured(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, report)


def run_pipelines(runs: dict[str, tuple[Path, list[str]]], parallel: bool) -> dict[str, Measured]:
    """Several runs, one after the other or side by side (each is one process: two fit two cores)."""
    if not parallel:
        return {name: run_pipeline(*args) for name, args in runs.items()}
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(run_pipeline, *args) for name, args in runs.items()}
        return {name: f.result() for name, f in futures.items()}


def documents_read(report: dict) -> int:
    return next(f["documents_out"] for f in report["flow"] if f["stage"] == "read")


def kept_documents(output_dir: Path, stage: str) -> dict[str, str]:
    docs = {}
    for path in sorted((output_dir / "work" / "docs" / stage).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            docs[doc["id"]] = doc["text"]
    return docs
