"""Following a Slurm run without a cluster: squeue's answers are canned, sbatch and scancel are fakes."""

import json
import re
import subprocess
from dataclasses import asdict
from pathlib import Path

import datatrove.executor.slurm
import pytest

from data_pipeline import run, slurm_jobs
from data_pipeline.config import (SINGLE_TASK_STAGE_DEFAULTS, ConfigError, ExecutorConfig, PreprocessConfig,
                                  StageExecutorConfig, stage_slurm_settings, validate)
from data_pipeline.executors import Stage, build_executors, logging_dir, render_slurm_scripts, slurm_sbatch_args
from data_pipeline.slurm_jobs import (JobTask, SlurmQueryError, StageFailed, StageJobs, follow_pipeline, parse_squeue,
                                      query_squeue, submit_pipeline)


def test_parse_squeue_reads_array_elements_and_plain_jobs():
    text = "12_0 COMPLETED\n12_1 FAILED\n\n13 PENDING\n14_[0-2%1] PENDING\n"
    assert parse_squeue(text) == [JobTask("12", 0, "COMPLETED"), JobTask("12", 1, "FAILED"),
                                  JobTask("13", None, "PENDING"), JobTask("14", None, "PENDING")]


def _squeue_answer(monkeypatch, returncode: int, stdout: str = "", stderr: str = "") -> list[tuple[str, ...]]:
    calls = []

    def fake(*argv):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    monkeypatch.setattr(slurm_jobs, "_slurm", fake)
    return calls


def test_query_squeue_asks_for_finished_elements_of_these_jobs(monkeypatch):
    calls = _squeue_answer(monkeypatch, 0, "7_0 RUNNING\n")
    assert query_squeue(["7", "9"]) == [JobTask("7", 0, "RUNNING")]
    assert calls == [("squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", "7,9")]


def test_jobs_that_left_the_queue_are_no_query_error(monkeypatch):
    _squeue_answer(monkeypatch, 1, stderr="slurm_load_jobs error: Invalid job id specified\n")
    assert query_squeue(["7"]) == []
    _squeue_answer(monkeypatch, 1, stderr="slurm_load_jobs error: Socket timed out on send/recv operation\n")
    with pytest.raises(SlurmQueryError, match="squeue -j 7 failed .*Socket timed out"):
        query_squeue(["7"])


# ---------------------------------------------------------------------------------------- following


def _stage(out: Path, name: str, tasks: int, job_id: str, merge_id: str) -> StageJobs:
    stage = Stage(key=name.split("_", 1)[1], name=name, title=name.split("_", 1)[1], pipeline=[], tasks=tasks)
    return StageJobs(stage, logging_dir(out, stage), [job_id], merge_id)


def _complete(jobs: StageJobs, *ranks: int) -> None:
    (jobs.log_dir / "completions").mkdir(parents=True, exist_ok=True)
    for rank in ranks:
        (jobs.log_dir / "completions" / f"{rank:05d}").touch()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class FakeSlurm:
    """squeue answering the next canned text at each poll; scancel recording what it was asked."""

    def __init__(self, *answers: str):
        self.answers, self.cancelled = list(answers), []

    def query(self, job_ids):
        return parse_squeue(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])

    def cancel(self, job_ids) -> str:
        self.cancelled.append(list(job_ids))
        return ""


@pytest.fixture
def pipeline(tmp_path) -> list[StageJobs]:
    return [_stage(tmp_path, "01_a", 2, "10", "11"), _stage(tmp_path, "02_b", 2, "12", "13"),
            _stage(tmp_path, "03_c", 1, "14", "15")]


def _follow(pipeline, slurm: FakeSlurm, **options) -> None:
    options.setdefault("sleep", lambda s: None)
    follow_pipeline(pipeline, str(pipeline[0].log_dir.parents[1]), query=slurm.query, cancel=slurm.cancel, **options)


def test_following_ends_when_every_stage_completed(pipeline):
    slurm = FakeSlurm("10_0 RUNNING\n10_1 RUNNING\n12_0 PENDING\n12_1 PENDING\n14_0 PENDING\n")
    polls = []

    def next_poll(_seconds):  # between two polls, the stages complete one after another
        polls.append(1)
        for stage_jobs in pipeline[:len(polls)]:
            _complete(stage_jobs, *range(stage_jobs.stage.tasks))

    _follow(pipeline, slurm, sleep=next_poll)
    assert len(polls) == 3 and slurm.cancelled == []


def test_failed_task_cancels_the_dependants_and_shows_its_log(pipeline):
    # a resumed run: rank 0 completed before, so the array's only element (0) runs rank 1
    _complete(pipeline[0], 0)
    _write(pipeline[0].log_dir / "ranks_to_run.json", "[1]")
    _write(pipeline[0].log_dir / "logs" / "task_00001.log",
           "".join(f"noise {i}\n" for i in range(30)) + "Traceback (most recent call last):\nValueError: boom\n")
    slurm = FakeSlurm("10_0 FAILED\n11_0 PENDING\n12_0 PENDING\n12_1 PENDING\n13_0 PENDING\n14_0 CANCELLED\n15_0 PENDING\n")
    with pytest.raises(StageFailed) as failed:
        _follow(pipeline, slurm)
    message = str(failed.value)
    assert message.startswith("stage 01_a (a) failed: job 10 task 0 ended FAILED\n")
    assert f"last lines of {pipeline[0].log_dir / 'logs' / 'task_00001.log'}:" in message
    assert message.count("\n  ") == 20 and "noise 11\n" not in message and "  noise 12\n" in message  # the tail
    assert "ValueError: boom" in message
    assert "cancelled the stages depending on it: 02_b (job 12), 03_c (job 14)" in message
    assert slurm.cancelled == [["11", "12", "13", "15"]]  # not 14: Slurm cancelled it already


def test_slurm_output_is_shown_when_python_never_started(pipeline):
    _write(pipeline[0].log_dir / "slurm_logs" / "10_1.out", "launch_pickled_pipeline: command not found\n")
    slurm = FakeSlurm("10_0 RUNNING\n10_1 FAILED\n11_0 PENDING\n12_0 PENDING\n")
    with pytest.raises(StageFailed, match=r"(?s)10_1\.out:\n  launch_pickled_pipeline: command not found"):
        _follow(pipeline, slurm)


def test_a_stage_gone_from_the_queue_unfinished_has_failed(pipeline):
    # finished jobs leave squeue after MinJobAge: only the completion markers tell what happened
    _complete(pipeline[0], 0, 1)
    _complete(pipeline[1], 1)
    _write(pipeline[1].log_dir / "logs" / "task_00000.log", "Traceback (most recent call last):\nOSError: disk full\n")
    slurm = FakeSlurm("14_0 PENDING\n15_0 PENDING\n")
    with pytest.raises(StageFailed) as failed:
        _follow(pipeline, slurm)
    assert "stage 02_b (b) failed: job 12 left the queue with 1 of 2 tasks complete" in str(failed.value)
    assert "OSError: disk full" in str(failed.value)
    assert slurm.cancelled == [["14", "15"]]


def test_completed_jobs_get_time_for_their_markers_to_show(pipeline):
    now = [0.0]
    slurm = FakeSlurm("10_0 COMPLETED\n10_1 COMPLETED\n12_0 PENDING\n")

    def later(seconds):
        now[0] += seconds
        if now[0] >= 20:  # a slow network filesystem shows them at last
            for stage_jobs in pipeline:
                _complete(stage_jobs, *range(stage_jobs.stage.tasks))

    _follow(pipeline, slurm, poll_s=5, settle_s=30, clock=lambda: now[0], sleep=later)

    for stage_jobs in pipeline:
        for marker in (stage_jobs.log_dir / "completions").iterdir():
            marker.unlink()
    now[0] = -100.0  # they never show
    with pytest.raises(StageFailed, match="job 10 ended COMPLETED with 0 of 2 tasks complete"):
        _follow(pipeline, slurm, poll_s=5, settle_s=30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))


def test_squeue_may_fail_for_a_while(pipeline):
    now = [0.0]
    answers = iter([SlurmQueryError("busy"), SlurmQueryError("busy"), "10_0 RUNNING\n"])

    def query(job_ids):
        answer = next(answers, None)
        if isinstance(answer, Exception):
            raise answer
        for stage_jobs in pipeline:
            _complete(stage_jobs, *range(stage_jobs.stage.tasks))
        return parse_squeue(answer or "")

    follow_pipeline(pipeline, str(pipeline[0].log_dir.parents[1]), query=query, cancel=FakeSlurm("").cancel,
                    clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))

    def never_answers(job_ids):
        raise SlurmQueryError("slurmctld is down")

    with pytest.raises(SlurmQueryError, match="slurmctld is down"):
        follow_pipeline(pipeline, "/nonexistent", query=never_answers, cancel=FakeSlurm("").cancel, query_patience_s=60,
                        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))


# --------------------------------------------------------------------------------------- submitting


@pytest.fixture
def fake_sbatch(monkeypatch):
    """sbatch numbering its jobs 1, 2, ...; `fail_at` makes that submission fail."""
    submitted: list[dict] = []
    fail_at = []

    def launch(script: str, job_id_retriever, *args):
        if len(submitted) + 1 in fail_at:
            raise subprocess.CalledProcessError(1, ["sbatch"])
        submitted.append({"script": script, "args": args})
        return job_id_retriever(f"Submitted batch job {len(submitted)}\n")

    monkeypatch.setattr(datatrove.executor.slurm, "launch_slurm_job", launch)
    return submitted, fail_at


def _slurm_stages(tmp_path, sbatch_args=None, tasks=(2, 2), **executor_options):
    stages = [Stage(key=f"s{i}", name=f"0{i}_s{i}", title="s", pipeline=[], tasks=n) for i, n in enumerate(tasks, 1)]
    cfg = ExecutorConfig(kind="slurm", partition="debug", sbatch_args=sbatch_args or {}, **executor_options)
    return stages, build_executors(stages, cfg, str(tmp_path))


def _dependency(job: dict) -> str:
    """What a submitted job waits for: sbatch's --dependency, given on its command line or in its script."""
    options = [*job["args"], *(line.removeprefix("#SBATCH ") for line in job["script"].splitlines())]
    return next((option.removeprefix("--dependency=") for option in options if option.startswith("--dependency=")), "")


def test_submitting_keeps_every_job_id_and_asks_slurm_to_cancel_on_failed_dependencies(tmp_path, fake_sbatch):
    submitted, _ = fake_sbatch
    stages, executors = _slurm_stages(tmp_path)
    jobs = submit_pipeline(stages, executors, str(tmp_path), cancel=FakeSlurm("").cancel)
    assert [(j.array_job_ids, j.merge_stats_job_id) for j in jobs] == [(["1"], "2"), (["3"], "4")]
    assert "--dependency=afterok:1" in submitted[2]["args"]
    assert all("#SBATCH --kill-on-invalid-dep=yes" in job["script"] for job in submitted)
    assert [j.describe() for j in jobs] == ["job 1", "job 3"]


def test_users_sbatch_args_win():
    assert slurm_sbatch_args({"kill-on-invalid-dep": "no", "account": "a"}) == {"kill-on-invalid-dep": "no", "account": "a"}


def test_failed_submission_cancels_the_jobs_submitted_before(tmp_path, fake_sbatch):
    _, fail_at = fake_sbatch
    fail_at.append(3)  # the second stage's array
    stages, executors = _slurm_stages(tmp_path)
    slurm = FakeSlurm("")
    with pytest.raises(StageFailed, match="submitting stage 02_s2 failed: sbatch exited with 1 .* submitted before it: 1, 2"):
        submit_pipeline(stages, executors, str(tmp_path), cancel=slurm.cancel)
    assert slurm.cancelled == [["1", "2"]]


def test_wait_may_change_between_a_run_and_its_resumption():
    assert "wait" not in run._output_defining_config(PreprocessConfig())["executor"]
    assert asdict(ExecutorConfig())["wait"] is True


def test_manifest_config_is_the_same_for_slurm_and_local_runs():
    local = run._output_defining_config(PreprocessConfig(executor=ExecutorConfig(kind="local", tasks=3)))
    slurm = run._output_defining_config(PreprocessConfig(executor=ExecutorConfig(kind="slurm", tasks=3, partition="p")))
    assert run._shard_defining_config(local) == run._shard_defining_config(slurm)
    assert run._shard_defining_config(local)["executor"] == {"tasks": 3}
    assert json.dumps(run._shard_defining_config(local))  # what the manifest stores


# ------------------------------------------------------------------------------------ waves of array jobs


def test_the_next_stage_and_the_stats_merge_wait_for_every_wave(tmp_path, fake_sbatch):
    submitted, _ = fake_sbatch
    stages, executors = _slurm_stages(tmp_path, tasks=(5, 2), max_array_size=2)
    jobs = submit_pipeline(stages, executors, str(tmp_path), cancel=FakeSlurm("").cancel)
    assert [(j.array_job_ids, j.merge_stats_job_id) for j in jobs] == [(["1", "2", "3"], "4"), (["5"], "6")]
    assert [_dependency(job) for job in submitted] == [
        "", "afterany:1", "afterany:2",  # datatrove submits each wave to start after the one before
        "afterok:1:2:3",  # the stats merge
        "afterok:1:2:3",  # the next stage: every wave, not only the last
        "afterok:5",
    ]
    assert "#SBATCH --array=0-1" in submitted[0]["script"]
    assert [j.describe() for j in jobs] == ["jobs 1, 2, 3", "job 5"]


def test_waves_submitted_at_once_wait_only_for_the_stage_before(tmp_path, fake_sbatch):
    submitted, _ = fake_sbatch
    stages, executors = _slurm_stages(tmp_path, tasks=(2, 3), max_array_size=2, max_array_launch_parallel=True)
    submit_pipeline(stages, executors, str(tmp_path), cancel=FakeSlurm("").cancel)
    assert [_dependency(job) for job in submitted] == ["", "afterok:1", "afterok:1", "afterok:1", "afterok:3:4"]


def test_a_stage_complete_from_an_earlier_run_passes_its_dependency_on(tmp_path, fake_sbatch):
    submitted, _ = fake_sbatch
    stages, executors = _slurm_stages(tmp_path, tasks=(4, 1, 1), max_array_size=2)
    _complete(StageJobs(stages[1], logging_dir(tmp_path, stages[1]), []), 0)
    jobs = submit_pipeline(stages, executors, str(tmp_path), cancel=FakeSlurm("").cancel)
    assert [j.array_job_ids for j in jobs] == [["1", "2"], [], ["4"]]
    assert _dependency(submitted[3]) == "afterok:1:2"


def test_tasks_per_job_packs_tasks_into_fewer_array_elements(tmp_path, fake_sbatch):
    submitted, _ = fake_sbatch
    stages, executors = _slurm_stages(tmp_path, tasks=(7, 1), max_array_size=2, tasks_per_job=3)
    jobs = submit_pipeline(stages, executors, str(tmp_path), cancel=FakeSlurm("").cancel)
    assert jobs[0].array_job_ids == ["1", "2"] and jobs[0].tasks_per_job == 3  # 3 elements: waves of 2 and 1
    assert "#SBATCH --array=0-1" in submitted[0]["script"]


def test_a_failed_element_of_a_later_wave_shows_its_own_task(tmp_path):
    stage = Stage(key="a", name="01_a", title="a", pipeline=[], tasks=12)
    jobs = StageJobs(stage, logging_dir(tmp_path, stage), ["10", "11"], "12", max_array_size=4, tasks_per_job=2)
    _complete(jobs, 10)  # element 1 of wave 2 is element 5, ranks 10 and 11: rank 10 completed
    _write(jobs.log_dir / "logs" / "task_00011.log", "Traceback (most recent call last):\nMemoryError\n")
    _write(jobs.log_dir / "logs" / "task_00000.log", "Traceback (most recent call last):\nOSError\n")
    slurm = FakeSlurm("10_0 RUNNING\n11_1 OUT_OF_MEMORY\n12_0 PENDING\n")
    with pytest.raises(StageFailed) as failed:
        _follow([jobs], slurm)
    assert "job 11 task 1 ended OUT_OF_MEMORY" in str(failed.value)
    assert "task_00011.log" in str(failed.value) and "MemoryError" in str(failed.value)
    assert slurm.cancelled == [["12"]]


def test_cancelling_the_dependants_covers_every_wave(tmp_path):
    first = _stage(tmp_path, "01_a", 2, "10", "11")
    later = _stage(tmp_path, "02_b", 9, "12", "15")
    later.array_job_ids = ["12", "13", "14"]
    slurm = FakeSlurm("10_0 FAILED\n11_0 PENDING\n12_0 PENDING\n13_0 PENDING\n14_0 PENDING\n15_0 PENDING\n")
    with pytest.raises(StageFailed, match=r"cancelled the stages depending on it: 02_b \(jobs 12, 13, 14\)"):
        _follow([first, later], slurm)
    assert slurm.cancelled == [["11", "12", "13", "14", "15"]]


# ---------------------------------------------------------------------------------- per-stage settings


def test_a_stage_setting_wins_over_the_builtin_default_which_wins_over_the_executor_value():
    ex = ExecutorConfig(kind="slurm", partition="cpu", time="03:00:00", mem_per_cpu_gb=4, sbatch_args={"account": "a", "x": 1},
                        stages={"near_clusters": StageExecutorConfig(mem_per_cpu_gb=64, sbatch_args={"x": 2}),
                                "clean": StageExecutorConfig(partition="short", workers=100, tasks_per_job=4)})
    near = stage_slurm_settings(ex, "near_clusters")
    assert (near.time, near.mem_per_cpu_gb, near.partition) == (SINGLE_TASK_STAGE_DEFAULTS["near_clusters"].time, 64, "cpu")
    assert near.sbatch_args == {"account": "a", "x": 2}
    clean = stage_slurm_settings(ex, "clean")
    assert (clean.time, clean.mem_per_cpu_gb, clean.partition, clean.workers, clean.tasks_per_job) == ("03:00:00", 4, "short", 100, 4)
    assert stage_slurm_settings(ex, "tokenize") == stage_slurm_settings(ExecutorConfig(**{**asdict(ex), "stages": {}}), "tokenize")


def test_per_stage_settings_reach_the_sbatch_scripts(tmp_path):
    stages = [Stage(key=key, name=f"0{i}_{key}", title=key, pipeline=[], tasks=n)
              for i, (key, n) in enumerate((("tokenize", 9), ("report", 1)), 1)]
    cfg = ExecutorConfig(kind="slurm", partition="cpu", max_array_size=4,
                         stages={"tokenize": StageExecutorConfig(cpus_per_task=4, qos="high", workers=2)})
    scripts = [path.read_text() for path in render_slurm_scripts(build_executors(stages, cfg, str(tmp_path)), tmp_path / "s")]
    assert {"#SBATCH --cpus-per-task=4", "#SBATCH --qos=high", "#SBATCH --array=0-3%2", "#SBATCH --time=02:00:00"} <= set(scripts[0].splitlines())
    assert "# 9 tasks, 1 per array element, in 3 array jobs of up to 4 elements, each starting after the one before" in scripts[0]
    report = set(scripts[1].splitlines())
    assert {"#SBATCH --mem-per-cpu=4G", "#SBATCH --time=02:00:00", "#SBATCH --array=0-0"} <= report
    assert "# waits (afterok) for every array job of 01_tokenize" in report


def test_a_stage_key_the_run_does_not_have_is_an_error_naming_it(tmp_path):
    stages = [Stage(key=key, name=f"0{i}_{key}", title=key, pipeline=[], tasks=1) for i, key in enumerate(("clean", "shard"), 1)]
    cfg = ExecutorConfig(kind="slurm", partition="cpu", stages={"shrad": StageExecutorConfig(time="01:00:00")})
    with pytest.raises(ConfigError, match=r"^executor.stages.shrad: no stage 'shrad'; stages: clean, shard$"):
        build_executors(stages, cfg, str(tmp_path))
    cfg.stages = {"shrad": StageExecutorConfig(), "near_clusters": StageExecutorConfig()}  # listed, nothing set
    assert len(build_executors(stages, cfg, str(tmp_path))) == 2


@pytest.mark.parametrize(("stage", "message"), [
    (StageExecutorConfig(time="2h"), "executor.stages.tokenize.time: '2h' is not a Slurm time limit"),
    (StageExecutorConfig(mem_per_cpu_gb=0), "executor.stages.tokenize.mem_per_cpu_gb: must be positive"),
    (StageExecutorConfig(tasks_per_job=-1), "executor.stages.tokenize.tasks_per_job: must be positive"),
    (StageExecutorConfig(workers=0), "executor.stages.tokenize.workers: must be positive, or -1"),
    (StageExecutorConfig(randomize_start_duration=-5), "executor.stages.tokenize.randomize_start_duration"),
])
def test_bad_stage_settings_are_errors_naming_the_key(stage, message):
    cfg = PreprocessConfig(input_dir="data/sample", quality={"web": None, "news": None, "books": None},
                           executor=ExecutorConfig(stages={"tokenize": stage}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


@pytest.mark.parametrize("time_limit", ["30", "30:00", "04:00:00", "2-00", "2-12:00", "1-00:00:00", "UNLIMITED"])
def test_slurm_time_formats_pass(time_limit):
    cfg = PreprocessConfig(input_dir="data/sample", quality={"web": None, "news": None, "books": None},
                           executor=ExecutorConfig(time=time_limit))
    validate(cfg)


def test_slurm_settings_may_change_between_a_run_and_its_resumption():
    changed = ExecutorConfig(kind="slurm", partition="p", max_array_size=8, max_array_launch_parallel=True, tasks_per_job=3,
                             randomize_start_duration=60, stages={"shard": StageExecutorConfig(time="48:00:00")})
    assert run._output_defining_config(PreprocessConfig(executor=changed)) == run._output_defining_config(PreprocessConfig())
