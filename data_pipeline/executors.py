"""Run a list of stages with datatrove's local (multiprocess) or Slurm executor.

Each stage gets its own logging folder (`<output>/logs/<stage>`) holding datatrove's completion
markers, so a rerun skips every task that finished, and its per-task stats, which the report reads.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.executor.base import PipelineExecutor
from datatrove.executor.slurm import default_job_id_retriever
from datatrove.pipeline.base import PipelineStep

from data_pipeline.config import ExecutorConfig, check_stage_keys, stage_slurm_settings
from shard_format.errors import ConfigError


@dataclass
class Stage:
    key: str  # what the config calls it: "clean", "exact_find" (executor.stages.<key>)
    name: str  # folder-friendly, unique and ordered: "01_clean"
    title: str  # what a person reads in the progress display
    pipeline: list[PipelineStep]
    tasks: int


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove prints every task's INFO log to the console; here the console shows progress bars and
    the task logs go only to `logs/<stage>/logs/task_*.log` (errors still reach the console)."""

    # overrides datatrove's private `LocalPipelineExecutor._run_for_rank`
    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        return super()._run_for_rank(rank, local_rank=max(local_rank, 1), node_rank=node_rank)


class TrackedSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor, keeping the id of every job it submits: datatrove keeps only its last
    array job's, and drops the one of the job that merges the stage's stats. A stage of more array
    elements than max_array_size is several array jobs (waves); the next stage and the stats merge wait
    for all of them (datatrove's wait for the last one only, which may end before the others)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, job_id_retriever=self._keep_job_id, **kwargs)
        self.array_job_ids: list[str] = []  # one per wave
        self.merge_stats_job_id: str | None = None

    def _keep_job_id(self, sbatch_output: str) -> str:
        job_id = default_job_id_retriever(sbatch_output, self.job_id_position)
        self.array_job_ids.append(job_id)
        return job_id

    def launch_job(self) -> None:
        predecessor = self.depends
        if isinstance(predecessor, TrackedSlurmExecutor):
            if not predecessor.job_id:
                predecessor.launch_job()
            # afterok:A:B:C waits for every wave; a predecessor that submitted nothing (complete in an
            # earlier run) passes on what it would have waited for
            self.depends_job_id = ":".join(predecessor.array_job_ids) or predecessor.depends_job_id
            self.depends = None  # as datatrove does: the pickled executor must not carry its predecessors
        super().launch_job()

    def launch_merge_stats(self) -> None:
        # datatrove makes the merge job depend on self.job_id, its last array job: name them all instead
        last_wave = self.job_id
        self.job_id = ":".join(self.array_job_ids)
        try:
            super().launch_merge_stats()
        finally:
            self.job_id = last_wave
        self.merge_stats_job_id = self.array_job_ids.pop()  # the id _keep_job_id just appended

    @property
    def array_elements(self) -> int:
        """Array elements of a full submission: tasks_per_job datatrove tasks each."""
        return math.ceil(self.tasks / self.tasks_per_job)

    @property
    def wave_size(self) -> int:
        return self.array_elements if self.max_array_size == -1 else min(self.array_elements, self.max_array_size)


def logging_dir(output_dir: str | os.PathLike, stage: Stage) -> Path:
    return Path(output_dir) / "logs" / stage.name


def completed_tasks(output_dir: str | os.PathLike, stage: Stage) -> int:
    """How many of the stage's tasks have finished (datatrove's completion markers, in this or an earlier run)."""
    folder = logging_dir(output_dir, stage) / "completions"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def slurm_sbatch_args(user_args: dict) -> dict:
    """The sbatch options of every stage job: Slurm cancels a job whose dependency failed, even on a cluster
    without DependencyParameters=kill_invalid_depend and when nobody follows the run; the user's win."""
    return {"kill-on-invalid-dep": "yes", **user_args}


def build_executors(stages: list[Stage], cfg: ExecutorConfig, output_dir: str) -> list[PipelineExecutor]:
    check_stage_keys(cfg, [stage.key for stage in stages])
    executors: list[PipelineExecutor] = []
    for stage in stages:
        depends = executors[-1] if executors else None
        log_dir = str(logging_dir(output_dir, stage))
        if cfg.kind == "local":
            workers = os.cpu_count() if cfg.workers == -1 else cfg.workers
            executor = QuietLocalExecutor(
                stage.pipeline, tasks=stage.tasks, workers=max(1, min(workers, stage.tasks)),
                logging_dir=log_dir, depends=depends,
            )
        else:
            settings = stage_slurm_settings(cfg, stage.key)
            if not settings.partition:
                raise ConfigError("executor.partition: the Slurm executor needs a partition")
            in_venv = sys.prefix != sys.base_prefix
            executor = TrackedSlurmExecutor(
                stage.pipeline, tasks=stage.tasks, time=settings.time, partition=settings.partition,
                cpus_per_task=settings.cpus_per_task, mem_per_cpu_gb=settings.mem_per_cpu_gb,
                workers=settings.workers, job_name=stage.name, qos=settings.qos, env_command=cfg.env_command,
                venv_path=os.path.join(sys.prefix, "bin", "activate") if in_venv and not cfg.env_command else None,
                sbatch_args=slurm_sbatch_args(settings.sbatch_args), max_array_size=cfg.max_array_size,
                max_array_launch_parallel=settings.max_array_launch_parallel, tasks_per_job=settings.tasks_per_job,
                randomize_start_duration=settings.randomize_start_duration,
                depends=depends, logging_dir=log_dir, slurm_logs_folder=str(Path(log_dir) / "slurm_logs"),
                mail_user=None,
            )
        executors.append(executor)
    return executors


def _waves_comment(executor: TrackedSlurmExecutor, predecessor: TrackedSlurmExecutor | None) -> str:
    waves = math.ceil(executor.array_elements / executor.wave_size)
    order = "submitted at once" if executor.max_array_launch_parallel else "each starting after the one before"
    split = "one array job" if waves == 1 else f"{waves} array jobs of up to {executor.wave_size} elements, {order}"
    lines = [f"# {executor.tasks} tasks, {executor.tasks_per_job} per array element, in {split}"]
    if predecessor is not None:
        lines.append(f"# waits (afterok) for every array job of {predecessor.job_name}")
    return "".join(f"{line}\n" for line in lines)


def render_slurm_scripts(executors: list[TrackedSlurmExecutor], folder: str | os.PathLike) -> list[Path]:
    """Write the sbatch script of every stage, with its own resources, without submitting anything
    (executor.dry_run=true); a comment at the top says how the stage is split into array jobs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, executor in enumerate(executors):
        command = f"srun -l -n 1 launch_pickled_pipeline {executor.logging_dir.resolve_paths('executor.pik')}"
        script = executor.get_launch_file_contents(executor.get_sbatch_args(executor.wave_size), command)
        shebang, _, rest = script.partition("\n")  # sbatch reads #SBATCH lines after comments too
        predecessor = executors[index - 1] if index else None
        path = folder / f"{executor.job_name}.sbatch"
        path.write_text(f"{shebang}\n{_waves_comment(executor, predecessor)}{rest}")
        paths.append(path)
    return paths

