"""Validate the config, build the stages, run them locally or submit them to Slurm, show the report."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from data_pipeline.config import ConfigError, PreprocessConfig, validate
from data_pipeline.executors import StageProgress, build_executors, logging_dir, render_slurm_scripts
from data_pipeline.pipeline import Layout, build_stages
from data_pipeline.report import REPORT_FILE, format_report

RUN_CONFIG_FILE = "run_config.json"
# settings that may change between a run and its resumption without changing any output
_RESUMABLE_KEYS = (("executor", "workers"), ("executor", "dry_run"), ("progress",))


def _output_defining_config(cfg: PreprocessConfig) -> dict:
    config = asdict(cfg)
    for path in _RESUMABLE_KEYS:
        node = config
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return json.loads(json.dumps(config))  # as it reads back from run_config.json (int keys become str)


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".")


def guard_output_dir(cfg: PreprocessConfig, config: dict) -> None:
    """A rerun into the same output folder resumes it, so it must be the same run: same config."""
    path = Path(cfg.output_dir) / RUN_CONFIG_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != config:
            key = _first_difference(previous, config)
            raise ConfigError(
                f"output_dir: {cfg.output_dir} holds a run made with a different config ({key} differs); "
                f"rerun with the same config to resume it, or choose a new output_dir"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def run_pipeline(cfg: PreprocessConfig) -> dict | None:
    sources = validate(cfg)
    config = _output_defining_config(cfg)
    # the manifest records what defines the shards, not where they were written: equal runs, equal bytes
    manifest_config = {k: v for k, v in config.items() if k != "output_dir"}
    stages = build_stages(cfg, sources, resolved_config=manifest_config)  # lists input files: path errors surface here
    guard_output_dir(cfg, config)
    executors = build_executors(stages, cfg.executor, cfg.output_dir)
    layout = Layout(cfg.output_dir)

    if cfg.executor.kind == "slurm":
        if cfg.executor.dry_run:
            paths = render_slurm_scripts(executors, layout.root / "slurm_scripts")
            print(f"wrote {len(paths)} sbatch scripts to {paths[0].parent} (nothing submitted)")
            return None
        executors[-1].run()
        for stage, executor in zip(stages, executors):
            print(f"{stage.name}: job {executor.job_id}")
        print(f"follow with: squeue -u $USER; logs in {layout.root / 'logs'}; the report lands in {layout.report}")
        return None

    try:
        with StageProgress(stages, cfg.output_dir, enabled=cfg.progress):
            executors[-1].run()
    except Exception as exc:
        failed = next((s for s in stages if _incomplete(cfg.output_dir, s)), None)
        where = f" in stage {failed.name} (task logs: {logging_dir(cfg.output_dir, failed) / 'logs'})" if failed else ""
        print(f"error: the pipeline failed{where}: {exc}", file=sys.stderr)
        raise
    report = json.loads((layout.root / REPORT_FILE).read_text())
    print(format_report(report))
    print(f"shards, manifest.json, tokenizer/ and report.json are in {layout.root}")
    return report


def _incomplete(output_dir: str, stage) -> bool:
    folder = logging_dir(output_dir, stage) / "completions"
    return (len(list(folder.iterdir())) if folder.is_dir() else 0) < stage.tasks
