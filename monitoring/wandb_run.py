"""Opening a W&B run the same way for every command, and marking a dataset artifact as its input.

A run folder must be self-contained: `wandb sync <folder>` on a machine with network needs no other
file, so artifact files are copied into the run folder before they are added (see `dataset.py`)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

from monitoring.config import LoggingConfig
from shard_format.errors import ConfigError

# a bare "token" would also match tokenizer, eos_token and max_tokens_per_shard
_SECRET_KEY = re.compile(r"api_?key|access_?key|secret|password|passwd|credential|^token$|"
                         r"(auth|access|api|hf|bearer|refresh)_?token", re.IGNORECASE)


def redact_secrets(config: Any) -> Any:
    """A copy of a nested config with every value under a secret-looking key replaced."""
    if isinstance(config, dict):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) else redact_secrets(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact_secrets(v) for v in config]
    return config


def open_run(cfg: LoggingConfig, *, job_type: str, config: dict, parent_dir: str, run_id: str | None = None):
    """A W&B run under `parent_dir`/wandb, or None when `cfg.mode` is disabled (wandb is then not imported).

    `run_id` continues that run (a resumed or requeued job); W&B's console capture and system-stats
    sampling are off: our console lines are the log, and the stats thread costs a core on a CPU node."""
    if cfg.mode == "disabled":
        return None
    import wandb

    os.makedirs(parent_dir, exist_ok=True)
    try:
        return wandb.init(
            project=cfg.project, entity=cfg.entity, name=cfg.run_name, id=run_id, resume="allow", mode=cfg.mode,
            job_type=job_type, dir=parent_dir, config=redact_secrets(config), tags=list(cfg.tags) or None,
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
    except wandb.errors.UsageError as exc:  # no API key, a wrong entity or project
        raise ConfigError(f"logging.mode: W&B {cfg.mode} did not start: {exc} (or use logging=offline)") from None


def run_folder(run) -> str:
    """The folder `wandb sync` takes: `<dir>/wandb/offline-run-<time>-<id>` (or `run-...` online)."""
    return os.path.dirname(run.dir)


def artifact_files_folder(run) -> str:
    """Where a run's artifact files are copied before they are added: inside its run folder."""
    return os.path.join(run_folder(run), "artifact_files")


def describe_run(run, mode: str) -> str:
    """The line a command prints about its run (and, offline, how to upload it)."""
    folder = run_folder(run)
    return f"W&B run {run.id} ({mode}): {folder}" + (f"\n  upload it with: wandb sync {folder}" if mode == "offline" else "")


@contextlib.contextmanager
def staging_in_run_folder(run) -> Iterator[None]:
    """While the block runs, W&B stages artifact files inside the run folder. A logged `wandb.Table` becomes
    an artifact of W&B's own, whose file W&B copies to `$WANDB_DATA_DIR/artifacts/staging` (by default in
    the home folder) and names in the run file: `wandb sync` of the run folder alone would miss it."""
    previous = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = os.path.join(run_folder(run), "staging")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = previous


def use_as_input(run, artifact) -> None:
    """Record `artifact` (a draft) as an input of `run`. Online, W&B finds the version with the same
    digest (the one the pipeline logged) or makes a new one. Offline, `Run.use_artifact` refuses; the
    private `Run._log_artifact(use_after_commit=True)` writes the record that `wandb sync` turns into
    the same logged-and-used artifact (this is what `use_artifact` does with a draft online)."""
    if run.settings._offline:
        run._log_artifact(artifact, use_after_commit=True)  # wandb.sdk.wandb_run.Run._log_artifact
    else:
        run.use_artifact(artifact)
