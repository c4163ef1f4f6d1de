"""Validate the config, build the stages, run them locally or submit them to Slurm, show the report."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from data_pipeline.config import PreprocessConfig, validate
from data_pipeline.executors import (Stage, TrackedSlurmExecutor, build_executors, completed_tasks, logging_dir,
                                     render_slurm_scripts)
from data_pipeline.pipeline import Layout, build_stages
from data_pipeline.progress import StageProgress, hide_library_bars_without_terminal
from data_pipeline.report import format_report
from data_pipeline.slurm_jobs import StageJobs, follow_pipeline, submit_pipeline
from data_pipeline.wandb_log import log_pipeline_run
from shard_format import storage
from shard_format.atomic import write_text_atomic
from shard_format.errors import ConfigError

RUN_CONFIG_FILE = "run_config.json"
# settings that may change between a run and its resumption without changing any output (a stage that
# ran out of time or memory on Slurm is resumed with more; a run logged offline is rerun to log it online)
_RESUMABLE_KEYS = (("progress",), ("progress_interval_s",), ("storage_options",), ("logging",)) + tuple(("executor", key) for key in (
    "kind", "workers", "dry_run", "wait", "partition", "qos", "time", "cpus_per_task", "mem_per_cpu_gb", "sbatch_args",
    "env_command", "max_array_size", "max_array_launch_parallel", "tasks_per_job", "randomize_start_duration", "stages"))


def _output_defining_config(cfg: PreprocessConfig) -> dict:
    config = asdict(cfg)
    for path in _RESUMABLE_KEYS:
        node = config
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return json.loads(json.dumps(config))  # as it reads back from run_config.json (int keys become str)


def _shard_defining_config(config: dict) -> dict:
    """The config the manifest records: what defines the shards, not where or how they were made (so a
    Slurm run and a local one, or two output folders, give equal bytes). executor.tasks stays: each stage
    splits the documents into that many parts."""
    manifest = {key: value for key, value in config.items() if key not in ("output_dir", "work_dir")}
    manifest["executor"] = {"tasks": config["executor"]["tasks"]}
    return manifest


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".")


def guard_output_dir(cfg: PreprocessConfig, config: dict) -> None:
    """A rerun into the same output folder resumes it, so it must be the same run: same config."""
    path = Layout.of(cfg).state / RUN_CONFIG_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != config:
            key = _first_difference(previous, config)
            raise ConfigError(
                f"output_dir: {cfg.output_dir} holds a run made with a different config ({key} differs); "
                f"rerun with the same config to resume it, or choose a new output_dir"
            )
        return
    write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def run_pipeline(cfg: PreprocessConfig) -> dict | None:
    sources = validate(cfg)
    config = _output_defining_config(cfg)
    # lists the input files: path errors surface here
    stages = build_stages(cfg, sources, resolved_config=_shard_defining_config(config))
    guard_output_dir(cfg, config)
    layout = Layout.of(cfg)
    executors = build_executors(stages, cfg.executor, layout.state)

    if cfg.executor.kind == "slurm":
        if cfg.executor.dry_run:
            paths = render_slurm_scripts(executors, layout.state / "slurm_scripts")
            print(f"wrote {len(paths)} sbatch scripts to {paths[0].parent} (nothing submitted)")
            return None
        return _submit_to_slurm(cfg, stages, executors, layout)

    hide_library_bars_without_terminal()
    try:
        with StageProgress(stages, layout.state, enabled=cfg.progress, interval_s=cfg.progress_interval_s):
            executors[-1].run()
    except Exception as exc:
        failed = next((s for s in stages if completed_tasks(layout.state, s) < s.tasks), None)
        where = f" in stage {failed.name} (task logs: {logging_dir(layout.state, failed) / 'logs'})" if failed else ""
        print(f"error: the pipeline failed{where}: {exc}", file=sys.stderr)
        raise
    return _report_and_log(cfg, layout)


def _submit_to_slurm(cfg: PreprocessConfig, stages: list[Stage], executors: list[TrackedSlurmExecutor],
                     layout: Layout) -> dict | None:
    """Submit every stage; with executor.wait, follow the jobs to the report (StageFailed when a stage fails)."""
    hide_library_bars_without_terminal()
    jobs = submit_pipeline(stages, executors, layout.state)
    for stage_jobs in jobs:
        print(f"{stage_jobs.stage.name}: {stage_jobs.describe()}", flush=True)
    if not cfg.executor.wait:
        print(_follow_hint(jobs, layout))
        if cfg.logging.mode != "disabled":  # only a command that follows the jobs to their end logs the run
            print(f"W&B ({cfg.logging.mode}): nothing logged while the jobs run; once they have ended, rerun this "
                  f"command with executor.wait=true: it finds every stage done and logs the run")
        return None
    try:
        with StageProgress(stages, layout.state, enabled=cfg.progress, interval_s=cfg.progress_interval_s):
            follow_pipeline(jobs, layout.state)
    except KeyboardInterrupt:
        print(f"\nstopped following; the jobs keep running. {_follow_hint(jobs, layout)}", file=sys.stderr)
        raise SystemExit(130) from None
    return _report_and_log(cfg, layout)


def _follow_hint(jobs: list[StageJobs], layout: Layout) -> str:
    job_ids = ",".join(job_id for stage_jobs in jobs for job_id in stage_jobs.array_job_ids)
    queue = f"squeue -j {job_ids}" if job_ids else "squeue --me"
    return f"follow with: {queue}; logs in {layout.logs}; the report lands in {layout.report}"


def _report_and_log(cfg: PreprocessConfig, layout: Layout) -> dict:
    """Print the report, then make the W&B run of it (see wandb_log.py; WandbLoggingError if W&B fails)."""
    report = json.loads(storage.read_bytes(layout.report, cfg.storage_options))
    print(format_report(report))
    print(f"shards, manifest.json, tokenizer/ and report.json are in {layout.output}", flush=True)
    line = log_pipeline_run(cfg, layout, report)
    if line is not None:
        print(line, flush=True)
    return report
