"""A run killed midway and rerun skips what finished and ends byte-identical to a clean run."""

import os
import signal
import subprocess
import time

import pytest

from .conftest import ROOT, SAMPLE_OVERRIDES, output_bytes, pipeline_command, run_pipeline_cli

pytestmark = pytest.mark.slow


def test_killed_run_resumes_to_byte_identical_output(sample_run, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(pipeline_command(out, *SAMPLE_OVERRIDES), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        # kill -9 once the MinHash signature stage has finished some but not all of its tasks
        while not list(out.glob("logs/05_*/completions/*")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists()
    done_before = {p.name for p in out.glob("logs/*/completions/*")}
    clean_log = next(out.glob("logs/01_*/logs/task_00000.log"))
    clean_log_written = clean_log.stat().st_mtime_ns

    rerun = run_pipeline_cli(out, *SAMPLE_OVERRIDES)
    assert done_before, "some tasks had completed before the kill"
    assert clean_log.stat().st_mtime_ns == clean_log_written, "the finished clean stage was not run again"
    assert output_bytes(out) == output_bytes(sample_run)
    assert "Tokens per source" in rerun.stdout


def test_rerun_with_another_config_is_refused(sample_run):
    proc = run_pipeline_cli(sample_run, *SAMPLE_OVERRIDES, "shards.seed=7", check=False)
    assert proc.returncode == 2
    assert "shards.seed differs" in proc.stderr and "output_dir" in proc.stderr
