"""Follow a submitted pipeline's Slurm jobs until the pipeline ends or one of its stages fails.

Job states come from `squeue -t all`, not sacct: not every cluster runs the accounting database. squeue
lists a finished job only for MinJobAge seconds, so a stage whose jobs have left the queue is judged by
its datatrove completion markers, which the shared filesystem shows here as it does on the nodes.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from data_pipeline.executors import Stage, TrackedSlurmExecutor, completed_tasks, logging_dir

FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
FINISHED_STATES = FAILED_STATES | {"COMPLETED"}
POLL_S = 2.0
# a job that ended COMPLETED wrote its completion markers, but a network filesystem may show them late
MARKER_SETTLE_S = 30.0
# how long squeue may fail in a row (a busy slurmctld) before following gives up
QUERY_PATIENCE_S = 120.0
LOG_TAIL_LINES = 20
SLURM_TIMEOUT_S = 60


class StageFailed(RuntimeError):
    """A stage of a Slurm run failed; the message names it, its job, the failing task's log and the
    dependant stages that were cancelled."""


class SlurmQueryError(RuntimeError):
    """squeue or scancel did not answer."""


@dataclass(frozen=True)
class JobTask:
    """One row of squeue: an element of an array job, or a plain job (task None)."""

    job_id: str  # the id sbatch printed; for an array element, the array's
    task: int | None
    state: str


def parse_squeue(text: str) -> list[JobTask]:
    """Rows of `squeue -h -r -o '%i %T'`: `123_4 RUNNING` is element 4 of array job 123, `123 PENDING` a plain job."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        job, state = line.split(maxsplit=1)
        job_id, _, task = job.partition("_")
        rows.append(JobTask(job_id, int(task) if task.isdigit() else None, state.strip()))
    return rows


def _slurm(*argv: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmQueryError(f"{argv[0]}: {exc}") from exc


def query_squeue(job_ids: Sequence[str]) -> list[JobTask]:
    """The states of these jobs' elements; finished ones too, while Slurm still lists them (MinJobAge)."""
    if not job_ids:
        return []
    proc = _slurm("squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(job_ids))
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # none of them is listed any more
            return []
        raise SlurmQueryError(f"squeue -j {','.join(job_ids)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_squeue(proc.stdout)


def scancel(job_ids: Sequence[str]) -> str:
    """Cancel the jobs; what scancel complained about ("" when nothing), e.g. a job that ended meanwhile."""
    return _slurm("scancel", *job_ids).stderr.strip()


@dataclass
class StageJobs:
    """A stage and the jobs submitted for it: none when earlier runs completed it, several (waves) when
    it has more array elements than max_array_size."""

    stage: Stage
    log_dir: Path
    array_job_ids: list[str]
    merge_stats_job_id: str | None = None
    max_array_size: int = 1001
    tasks_per_job: int = 1

    @classmethod
    def of(cls, stage: Stage, executor: TrackedSlurmExecutor, output_dir: str) -> "StageJobs":
        return cls(stage, logging_dir(output_dir, stage), list(executor.array_job_ids), executor.merge_stats_job_id,
                   executor.max_array_size, executor.tasks_per_job)

    @property
    def job_ids(self) -> list[str]:
        return self.array_job_ids + ([self.merge_stats_job_id] if self.merge_stats_job_id else [])

    def describe(self) -> str:
        if not self.array_job_ids:
            return "already complete"
        return ("job " if len(self.array_job_ids) == 1 else "jobs ") + ", ".join(self.array_job_ids)


def submit_pipeline(stages: list[Stage], executors: list[TrackedSlurmExecutor], output_dir: str,
                    cancel: Callable[[Sequence[str]], str] = scancel) -> list[StageJobs]:
    """Submit every stage (the last one's executor submits those it depends on first); when sbatch fails
    for a stage, cancel the jobs of the stages submitted before it, which would wait on it forever."""
    try:
        executors[-1].run()
    except subprocess.CalledProcessError as exc:
        failed = next((stage for stage, executor in zip(stages, executors) if executor.job_id is None), stages[-1])
        submitted = [job_id for stage_jobs in _jobs_of(stages, executors, output_dir) for job_id in stage_jobs.job_ids]
        complaint = cancel(submitted) if submitted else ""
        cancelled = f"; cancelled the jobs submitted before it: {', '.join(submitted)}" if submitted else ""
        raise StageFailed(f"submitting stage {failed.name} failed: sbatch exited with {exc.returncode} (its message "
                          f"is above){cancelled}" + (f"; scancel said: {complaint}" if complaint else "")) from exc
    return _jobs_of(stages, executors, output_dir)


def _jobs_of(stages: list[Stage], executors: list[TrackedSlurmExecutor], output_dir: str) -> list[StageJobs]:
    return [StageJobs.of(stage, executor, output_dir) for stage, executor in zip(stages, executors)]


@dataclass(frozen=True)
class Failure:
    jobs: StageJobs
    what: str  # "job 12 task 1 ended FAILED"
    job_id: str | None = None  # the failed array element, when squeue named one
    task: int | None = None
    settled: bool = True  # false: may still turn out complete once the filesystem shows its markers


def stage_failure(jobs: StageJobs, rows: list[JobTask], completed: int) -> Failure | None:
    """Why the stage can no longer complete, if it cannot. rows: squeue's rows of the run's jobs;
    completed: its tasks' completion markers, counted after the query."""
    if completed >= jobs.stage.tasks:
        return None
    mine = [row for row in rows if row.job_id in jobs.array_job_ids]
    failed = next((row for row in mine if row.state in FAILED_STATES), None)
    if failed is not None:
        task = f" task {failed.task}" if failed.task is not None else ""
        return Failure(jobs, f"job {failed.job_id}{task} ended {failed.state}", failed.job_id, failed.task)
    if all(row.state == "COMPLETED" for row in mine):
        ended = "ended COMPLETED" if mine else "left the queue"
        return Failure(jobs, f"{jobs.describe()} {ended} with {completed} of {jobs.stage.tasks} tasks complete",
                       settled=not mine)
    return None


def _ranks_to_run(jobs: StageJobs) -> list[int]:
    """The ranks of the stage's array elements, in order (datatrove saves them at every submission)."""
    path = jobs.log_dir / "ranks_to_run.json"
    return json.loads(path.read_text()) if path.is_file() else list(range(jobs.stage.tasks))


def _failing_element(failure: Failure) -> tuple[int, str | None, int | None]:
    """(rank, array job id, array index) of the task to show: the failed element's first incomplete task,
    else the stage's first incomplete one. Array element e of the submission (counted over every wave)
    runs the ranks at positions e*tasks_per_job ... of ranks_to_run.json."""
    jobs = failure.jobs
    ranks = _ranks_to_run(jobs)
    done = {p.name for p in (jobs.log_dir / "completions").glob("*")}
    elements = max(math.ceil(len(ranks) / jobs.tasks_per_job), 1)
    per_wave = jobs.max_array_size if jobs.max_array_size > 0 else elements
    incomplete = [position for position, rank in enumerate(ranks) if f"{rank:05d}" not in done]
    if failure.task is not None and failure.job_id in jobs.array_job_ids:
        element = jobs.array_job_ids.index(failure.job_id) * per_wave + failure.task
        first = element * jobs.tasks_per_job
        position = next((p for p in incomplete if first <= p < first + jobs.tasks_per_job), first)
    else:
        position = incomplete[0] if incomplete else 0
        element = position // jobs.tasks_per_job
    rank = ranks[position] if position < len(ranks) else position
    wave = element // per_wave
    job_id = jobs.array_job_ids[wave] if wave < len(jobs.array_job_ids) else None
    return rank, job_id, element % per_wave


def failing_task_log(failure: Failure) -> Path | None:
    """The log that shows why the task failed: datatrove's task log, or Slurm's output of the job, which
    alone shows what failed before Python started (a broken env_command, a missing launcher)."""
    rank, job_id, task = _failing_element(failure)
    candidates = [failure.jobs.log_dir / "logs" / f"task_{rank:05d}.log"]
    if job_id is not None:
        candidates.append(failure.jobs.log_dir / "slurm_logs" / f"{job_id}_{task}.out")
    logs = [path for path in candidates if path.is_file() and path.stat().st_size]
    with_traceback = [path for path in logs if "Traceback" in path.read_text(errors="replace")]
    return (with_traceback or logs or [None])[0]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]


def cancel_dependants(jobs: list[StageJobs], failed: int, rows: list[JobTask],
                      cancel: Callable[[Sequence[str]], str]) -> tuple[list[StageJobs], str]:
    """Cancel what waits on stage `failed` (the later stages' jobs and its stats-merging job) without
    relying on the cluster's kill_invalid_depend. Returns the later stages that had jobs, and scancel's complaints."""
    later = [stage_jobs for stage_jobs in jobs[failed + 1:] if stage_jobs.job_ids]
    waiting = {row.job_id for row in rows if row.state not in FINISHED_STATES}
    dependants = [jobs[failed].merge_stats_job_id, *(job_id for stage_jobs in later for job_id in stage_jobs.job_ids)]
    to_cancel = [job_id for job_id in dependants if job_id in waiting]
    return later, cancel(to_cancel) if to_cancel else ""


def failure_message(failure: Failure, cancelled: list[StageJobs], scancel_complaint: str = "") -> str:
    stage = failure.jobs.stage
    lines = [f"stage {stage.name} ({stage.title}) failed: {failure.what}"]
    log = failing_task_log(failure)
    if log is None:
        lines.append(f"no task log in {failure.jobs.log_dir / 'logs'} nor {failure.jobs.log_dir / 'slurm_logs'}")
    else:
        lines += [f"last lines of {log}:", *(f"  {line}" for line in _tail(log))]
    if cancelled:
        lines.append("cancelled the stages depending on it: "
                     + ", ".join(f"{jobs.stage.name} ({jobs.describe()})" for jobs in cancelled))
    if scancel_complaint:
        lines.append(f"scancel said: {scancel_complaint}")
    lines.append("fix the cause and rerun the same command: it resumes, skipping the tasks that completed")
    return "\n".join(lines)


def follow_pipeline(jobs: list[StageJobs], output_dir: str, *,
                    query: Callable[[Sequence[str]], list[JobTask]] = query_squeue,
                    cancel: Callable[[Sequence[str]], str] = scancel,
                    poll_s: float = POLL_S, settle_s: float = MARKER_SETTLE_S, query_patience_s: float = QUERY_PATIENCE_S,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once every stage has completed; raise StageFailed, after cancelling its dependants, as soon
    as one cannot complete any more."""
    job_ids = [job_id for stage_jobs in jobs for job_id in stage_jobs.job_ids]
    suspect_since: dict[str, float] = {}
    query_failing_since: float | None = None
    while True:
        try:
            rows = query(job_ids)
            query_failing_since = None
        except SlurmQueryError:
            query_failing_since = query_failing_since if query_failing_since is not None else clock()
            if clock() - query_failing_since > query_patience_s:
                raise
            sleep(poll_s)
            continue
        incomplete = False
        for index, stage_jobs in enumerate(jobs):
            # counted after the query: a job squeue showed ended had written its markers before
            completed = completed_tasks(output_dir, stage_jobs.stage)
            incomplete = incomplete or completed < stage_jobs.stage.tasks
            failure = stage_failure(stage_jobs, rows, completed)
            if failure is None:
                suspect_since.pop(stage_jobs.stage.name, None)
                continue
            first_seen = suspect_since.setdefault(stage_jobs.stage.name, clock())
            if failure.settled or clock() - first_seen >= settle_s:
                cancelled, complaint = cancel_dependants(jobs, index, rows, cancel)
                raise StageFailed(failure_message(failure, cancelled, complaint))
            incomplete = True
            break  # what fails after this stage would only be a consequence of it
        if not incomplete:
            return
        sleep(poll_s)
