"""`executor=slurm` against the real local Slurm cluster (tests/slurm_cluster.py): the same shards as a
local run, and a failing stage that cancels its dependants and ends the command with the task's error."""

import re
import subprocess

import pytest

from .conftest import ROOT, SAMPLE, SAMPLE_OVERRIDES, output_bytes, pipeline_command

pytestmark = pytest.mark.slurm

STAGE_JOB = re.compile(r"^(\d\d_\w+): jobs? (\d+)", re.MULTILINE)


def stage_jobs(stdout: str) -> dict[str, str]:
    """Stage name -> its (first) array job id, as the command prints them after submitting."""
    return dict(STAGE_JOB.findall(stdout))


def run_on_slurm(output_dir, cluster, *overrides: str, timeout: float) -> subprocess.CompletedProcess:
    """The CLI with executor=slurm; if it hangs, its jobs are cancelled and the test fails."""
    # `executor=slurm` picks the config group, so it comes before the executor.* overrides it would reset
    command = pipeline_command(output_dir, "executor=slurm", f"executor.partition={cluster.partition}", *overrides)
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        job_ids = list(stage_jobs(stdout).values())
        if job_ids:
            subprocess.run(["scancel", *job_ids], timeout=30)
        pytest.fail(f"the command still ran after {timeout:.0f}s (cancelled its jobs {job_ids}):\n{stdout[-3000:]}")


def test_slurm_run_gives_the_shards_of_a_local_run(sample_run, slurm_cluster, tmp_path):
    out = tmp_path / "out"
    proc = run_on_slurm(out, slurm_cluster, *SAMPLE_OVERRIDES, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    jobs = stage_jobs(proc.stdout)
    assert len(jobs) == 15, proc.stdout
    assert {slurm_cluster.state(job_id) for job_id in jobs.values()} == {"COMPLETED"}
    assert "Tokens per source" in proc.stdout  # the report, printed by the command as after a local run
    assert output_bytes(out) == output_bytes(sample_run)


def test_failing_stage_cancels_its_dependants_and_shows_the_task_error(slurm_cluster, tmp_path):
    not_a_tokenizer = tmp_path / "tokenizer.json"  # exists, so config validation passes; the tokenizer task fails
    not_a_tokenizer.write_text("{ this is not a tokenizer\n")
    proc = run_on_slurm(
        tmp_path / "out", slurm_cluster,
        "input_dir=null", f"sources=[{{name: news, kind: news, paths: [{SAMPLE / 'news'}]}}]",  # one file: a quick run
        "executor.tasks=2", f"tokenizer.path={not_a_tokenizer}",
        "dedup.exact.enabled=false", "dedup.minhash.enabled=false", "dedup.paragraph.enabled=false",
        timeout=300,
    )
    assert proc.returncode == 1, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    jobs = stage_jobs(proc.stdout)
    names = list(jobs)
    assert [name.split("_", 1)[1] for name in names] == ["clean", "tokenizer", "tokenize", "shard", "report"]
    tokenizer = names[1]
    assert f"stage {tokenizer} (tokenizer) failed: job {jobs[tokenizer]} task 0 ended FAILED" in proc.stderr
    assert "task_00000.log" in proc.stderr and "cannot load" in proc.stderr  # the error, from the task's log
    assert "cancelled the stages depending on it: " + ", ".join(f"{n} (job {jobs[n]})" for n in names[2:]) in proc.stderr
    assert slurm_cluster.state(jobs[tokenizer]) == "FAILED"
    assert [slurm_cluster.state(jobs[name]) for name in names[2:]] == ["CANCELLED"] * 3
