"""Training jobs on the real local Slurm cluster (2-node jobs on 3 emulated nodes, CPU, gloo): submitted with
`python -m pretrain.submit`, they train like a local torchrun run, and a job asked to stop
checkpoints, requeues itself and finishes with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .train_runs import ENV, assert_same_weights, losses, run_overrides, train, wait_for_step, wait_until

pytestmark = pytest.mark.slurm
MAX_STEPS = 16
JOB_OVERRIDES = (f"max_steps={MAX_STEPS}", "deepspeed=zero2", "deepspeed.precision=fp32")
JOB_TIMEOUT = 600


def submit(cluster, out: Path, shards: Path, *submit_args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pretrain.submit", "--nodes", "2", "--ntasks-per-node", "1",
                           "--partition", cluster.partition, "--job-name", "test-train", *submit_args,
                           *run_overrides(out, shards, *JOB_OVERRIDES)],
                          cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"submitted job (\d+)", proc.stdout)
    assert match, proc.stdout
    assert f"tail -f {out}/slurm-{match.group(1)}.out" in proc.stdout
    return match.group(1)


def job_output(out: Path, job_id: str) -> str:
    return (out / f"slurm-{job_id}.out").read_text()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, sample_run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("slurm_train") / "run"
    job_id = submit(slurm_cluster, out, sample_run)
    info = slurm_cluster.wait(job_id, JOB_TIMEOUT)
    assert info["JobState"] == "COMPLETED", f"job {job_id} {info['JobState']}:\n{job_output(out, job_id)[-4000:]}"
    return out, job_id


def test_two_node_job_trains_like_local_torchrun(slurm_run, slurm_cluster, sample_run, tmp_path):
    out, job_id = slurm_run
    info = slurm_cluster.job(job_id)
    assert info["NumNodes"] == "2" and info["NodeList"] == "n[1-2]" and info["Restarts"] == "0"  # completed: no requeue
    local = tmp_path / "torchrun"
    train(local, sample_run, 2, *JOB_OVERRIDES)
    on_slurm = losses(out)
    assert sorted(on_slurm) == list(range(1, MAX_STEPS + 1))
    assert on_slurm == losses(local)
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))] == [f"step_{s:08d}" for s in (4, 8, 12, 16)]
    assert "requeueing" not in job_output(out, job_id)


def test_preempted_job_checkpoints_requeues_and_finishes_like_an_uninterrupted_one(slurm_run, slurm_cluster, sample_run,
                                                                                   tmp_path):
    out = tmp_path / "preempted"
    job_id = submit(slurm_cluster, out, sample_run)
    wait_for_step(out, 3, timeout=JOB_TIMEOUT, alive=lambda: slurm_cluster.state(job_id) in ("PENDING", "RUNNING"))
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
    info = slurm_cluster.wait(job_id, JOB_TIMEOUT)
    output = job_output(out, job_id)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output[-4000:]

    stop = re.search(r"step (\d+): stop signal \(SIGUSR1\): checkpointing and stopping", output)
    assert stop, output[-4000:]
    stopped_at = int(stop.group(1))
    assert 3 <= stopped_at < MAX_STEPS
    assert f"job {job_id} (restart 0)" in output and f"job {job_id} (restart 1)" in output  # one file, appended
    assert f"requeueing job {job_id}" in output
    stop_state = json.loads((out / "checkpoints" / f"step_{stopped_at:08d}" / "trainer_state.json").read_text())
    final_state = json.loads((out / "checkpoints" / f"step_{MAX_STEPS:08d}" / "trainer_state.json").read_text())
    assert stop_state["wandb_run_id"] == final_state["wandb_run_id"]  # the same W&B run continues

    reference, _ = slurm_run
    assert losses(out) == losses(reference)
    assert_same_weights(reference / "checkpoints" / f"step_{MAX_STEPS:08d}", out / "checkpoints" / f"step_{MAX_STEPS:08d}")


def test_a_job_signalled_while_starting_requeues_and_still_finishes_like_an_uninterrupted_one(slurm_run, slurm_cluster,
                                                                                            sample_run, tmp_path):
    """USR1 before the ranks have trained a step (maybe before they can handle it): whether they stop after
    their first step with a checkpoint or die of the signal, the job requeues and ends where it should."""
    out = tmp_path / "signalled_early"
    job_id = submit(slurm_cluster, out, sample_run)
    # the script's first line says its traps are set (Slurm may drop a signal sent before the script runs)
    started = out / f"slurm-{job_id}.out"
    wait_until(lambda: started.exists() and f"job {job_id} (restart 0)" in started.read_text(), JOB_TIMEOUT,
               f"the batch script of job {job_id} to start")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
    info = slurm_cluster.wait(job_id, JOB_TIMEOUT)
    output = job_output(out, job_id)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output[-4000:]
    assert f"requeueing job {job_id}" in output

    reference, _ = slurm_run
    assert losses(out) == losses(reference)
    assert_same_weights(reference / "checkpoints" / f"step_{MAX_STEPS:08d}", out / "checkpoints" / f"step_{MAX_STEPS:08d}")


def _rank_pids(rank: int) -> list[int]:
    """Processes of `python -m pretrain.train` whose SLURM_PROCID is `rank` (the emulated nodes share this host)."""
    pids = []
    for pid in subprocess.run(["pgrep", "-f", "pretrain.train"], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_PROCID={rank}".encode() in environ and b"SLURM_STEP_ID=0" in environ:
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("exclude", [False, True], ids=["requeue", "requeue-without-the-node"])
def test_a_killed_rank_requeues_the_job_which_resumes_and_finishes_like_an_uninterrupted_one(slurm_run, slurm_cluster,
                                                                                               sample_run, tmp_path,
                                                                                               exclude):
    out = tmp_path / "crashed"
    job_id = submit(slurm_cluster, out, sample_run, *(["--exclude-failed-nodes"] if exclude else []))
    # past the first checkpoint (step 4), so that the requeued job resumes from it
    wait_for_step(out, 6, timeout=JOB_TIMEOUT, alive=lambda: slurm_cluster.state(job_id) in ("PENDING", "RUNNING"))
    nodes = subprocess.run(["scontrol", "show", "hostnames", slurm_cluster.job(job_id)["NodeList"]], check=True,
                           capture_output=True, text=True).stdout.split()
    failed_node = nodes[1]  # one task per node: rank 1 runs on the second
    victims = _rank_pids(1)
    assert victims, "no process of rank 1 found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    info = slurm_cluster.wait(job_id, JOB_TIMEOUT)
    output = job_output(out, job_id)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output[-4000:]
    reason = rf"training failed \(status \d+; restart 1 of at most 3\): requeueing job {job_id}"
    assert re.search(reason, output), output[-4000:]
    assert "last heartbeat of every rank, the silent first:" in output  # rank 0 reported the failure
    assert "srun: error: " in output and ": task 1: Killed" in output
    rerun = output[output.index(f"job {job_id} (restart 1)"):]
    assert re.search(r"resumed from \S+/checkpoints/step_0000000[48] \(step [48]\)", rerun), rerun[:3000]
    if exclude:  # the requeued job ran on two nodes, not on the one where rank 1 died
        assert f"without node(s) {failed_node}" in output and info["ExcNodeList"] == failed_node, output[-4000:]
        rerun_nodes = subprocess.run(["scontrol", "show", "hostnames", info["NodeList"]], check=True,
                                     capture_output=True, text=True).stdout.split()
        assert len(rerun_nodes) == 2 and failed_node not in rerun_nodes, info

    reference, _ = slurm_run
    assert losses(out) == losses(reference)
    assert_same_weights(reference / "checkpoints" / f"step_{MAX_STEPS:08d}", out / "checkpoints" / f"step_{MAX_STEPS:08d}")
