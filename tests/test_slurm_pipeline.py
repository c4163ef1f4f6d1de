"""`executor=slurm` against the real local Slurm cluster (tests/slurm_cluster.py): the same shards as a
local run, and a failing stage that cancels its dependants and ends the command with the task's error."""

import re
import subprocess

import pytest

from .conftest import ROOT, SAMPLE, SAMPLE_OVERRIDES, output_bytes, pipeline_command

pytestmark = pytest.mark.slurm

STAGE_JOB = re.compile(r"^(\d\d_\w+): jobs? (\d+)", re.MULTILINE)
STAGE_JOBS = re.compile(r"^(\d\d_\w+): jobs? ([\d, ]+)$", re.MULTILINE)


def stage_jobs(stdout: str) -> dict[str, str]:
    """Stage name -> its (first) array job id, as the command prints them after submitting."""
    return dict(STAGE_JOB.findall(stdout))


def stage_array_jobs(stdout: str) -> dict[str, list[str]]:
    """Stage key -> every array job id (one per wave) the command printed for it."""
    return {name.split("_", 1)[1]: ids.split(", ") for name, ids in STAGE_JOBS.findall(stdout)}


def afterok_job_ids(job: dict[str, str]) -> set[str]:
    """The jobs a pending job waits for (scontrol: `afterok:12_*(unfulfilled),afterok:13_*(unfulfilled)`)."""
    return set(re.findall(r"afterok:(\d+)", job["Dependency"]))


def run_on_slurm(output_dir, cluster, *overrides: str, timeout: float) -> subprocess.CompletedProcess:
    """The CLI with executor=slurm; if it hangs, its jobs are cancelled and the test fails."""
    # `executor=slurm` picks the config group, so it comes before the executor.* overrides it would reset
    # the cluster's MaxArraySize (8 by default, see start.sh): near_buckets' 14 tasks are two array jobs
    command = pipeline_command(output_dir, "executor=slurm", f"executor.partition={cluster.partition}",
                               f"executor.max_array_size={cluster.max_array_size()}", *overrides)
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
    assert len(jobs) == 17, proc.stdout
    assert {slurm_cluster.state(job_id) for job_id in jobs.values()} == {"COMPLETED"}
    assert "Tokens per source" in proc.stdout  # the report, printed by the command as after a local run
    assert output_bytes(out) == output_bytes(sample_run)
    # one W&B run, made by the command that followed the jobs (a task making one would add folders)
    (run_folder,) = (out / "wandb").glob("offline-run-*")
    assert f"(offline): {run_folder}" in proc.stdout


def test_failing_stage_cancels_its_dependants_and_shows_the_task_error(slurm_cluster, tmp_path):
    not_a_tokenizer = tmp_path / "tokenizer.json"  # exists, so config validation passes; the tokenizer task fails
    not_a_tokenizer.write_text("{ this is not a tokenizer\n")
    proc = run_on_slurm(
        tmp_path / "out", slurm_cluster,
        "input_dir=null", f"sources=[{{name: news, kind: news, paths: [{SAMPLE / 'news'}]}}]",  # one file: a quick run
        "executor.tasks=2", "shards.buckets=2", f"tokenizer.path={not_a_tokenizer}",
        "dedup.exact.enabled=false", "dedup.minhash.enabled=false", "dedup.paragraph.enabled=false",
        timeout=300,
    )
    assert proc.returncode == 1, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    jobs = stage_jobs(proc.stdout)
    names = list(jobs)
    assert [name.split("_", 1)[1] for name in names] == ["clean", "tokenizer", "tokenize", "shard", "manifest", "report"]
    tokenizer = names[1]
    assert f"stage {tokenizer} (tokenizer) failed: job {jobs[tokenizer]} task 0 ended FAILED" in proc.stderr
    assert "task_00000.log" in proc.stderr and "cannot load" in proc.stderr  # the error, from the task's log
    assert "cancelled the stages depending on it: " + ", ".join(f"{n} (job {jobs[n]})" for n in names[2:]) in proc.stderr
    assert slurm_cluster.state(jobs[tokenizer]) == "FAILED"
    assert [slurm_cluster.state(jobs[name]) for name in names[2:]] == ["CANCELLED"] * 4


def test_a_stage_beyond_max_array_size_runs_in_waves_and_the_next_stage_waits_for_all(slurm_cluster, tmp_path):
    limit = slurm_cluster.max_array_size()
    if limit > 16:
        pytest.fail(f"the cluster allows arrays of {limit}: restart it with slurm/local_cluster/stop.sh and "
                    "start.sh, which set MaxArraySize=8, so a small stage can exceed it")
    tasks, wave = limit + 2, limit // 2  # tokenize: waves of 4, 4 and 2 tasks on the default cluster
    out = tmp_path / "out"
    command = pipeline_command(
        out, "executor=slurm", f"executor.partition={slurm_cluster.partition}", "input_dir=null",
        f"sources=[{{name: news, kind: news, paths: [{SAMPLE / 'news'}]}}]",  # one file: clean is one task
        f"executor.tasks={tasks}", f"executor.max_array_size={wave}", "executor.max_array_launch_parallel=true",
        "dedup.exact.enabled=false", "dedup.minhash.enabled=false", "dedup.paragraph.enabled=false",
        "tokenizer.vocab_size=1024",
        "+executor.stages.clean.sbatch_args.hold=''",  # nothing runs until the test has looked at the queue
        "executor.stages.tokenize.time=00:20:00", "executor.stages.tokenize.mem_per_cpu_gb=1",
        "executor.stages.tokenizer.cpus_per_task=2",
    )
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        while "_report: " not in printed and proc.poll() is None:  # the stages' job ids, printed after submitting
            printed += proc.stdout.readline()
        jobs = stage_array_jobs(printed)
        assert list(jobs) == ["clean", "tokenizer", "tokenize", "shard", "manifest", "report"], printed
        assert len(jobs["tokenize"]) == 3
        queued = slurm_cluster.jobs_writing_under(out)

        # the next stage and the stats merge wait for every wave; the waves, submitted at once, for the stage before
        assert afterok_job_ids(slurm_cluster.job(jobs["shard"][0])) == set(jobs["tokenize"])
        tokenize_merge = [row for row in queued if "/03_tokenize/" in row["StdOut"] and row["JobId"] not in jobs["tokenize"]]
        assert [afterok_job_ids(row) for row in tokenize_merge] == [set(jobs["tokenize"])]
        for wave_id in jobs["tokenize"]:
            assert afterok_job_ids(slurm_cluster.job(wave_id)) == set(jobs["tokenizer"])

        # per-stage resources: the user's, the single-task stages' built-in defaults, the executor's
        tokenize, tokenizer, shard, manifest = (slurm_cluster.job(jobs[key][0])
                                                for key in ("tokenize", "tokenizer", "shard", "manifest"))
        assert (tokenize["TimeLimit"], tokenize["MinMemoryCPU"], tokenize["NumCPUs"]) == ("00:20:00", "1G", "1")
        assert (tokenizer["TimeLimit"], tokenizer["MinMemoryCPU"], tokenizer["NumCPUs"]) == ("12:00:00", "16G", "2")
        assert (manifest["TimeLimit"], manifest["MinMemoryCPU"]) == ("02:00:00", "4G")
        assert (shard["TimeLimit"], shard["MinMemoryCPU"]) == ("04:00:00", "2G")  # conf/executor/slurm.yaml
        assert slurm_cluster.job(jobs["clean"][0])["TimeLimit"] == "04:00:00"  # conf/executor/slurm.yaml

        held = [row["JobId"] for row in queued if row.get("Reason") == "JobHeldUser"]
        assert len(held) == 2  # clean's array and its stats merge
        subprocess.run(["scontrol", "release", *held], check=True, timeout=30)
        rest, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", *{row.get("ArrayJobId", row["JobId"]) for row in slurm_cluster.jobs_writing_under(out)}],
                           timeout=30)
    assert proc.returncode == 0, (printed + rest)[-5000:]
    assert "Tokens per source" in rest
    assert len(list((out / "logs" / "03_tokenize" / "completions").iterdir())) == tasks
    # the report's stats merge may still be pending when the command, which waits for the tasks, returns
    ended = [slurm_cluster.wait(row["JobId"], timeout=120) for row in slurm_cluster.jobs_writing_under(out)]
    assert {job["JobState"] for job in ended} == {"COMPLETED"}
