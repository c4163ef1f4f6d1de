"""Which data made a run, and which checkpoints it made: W&B's lineage graph reads data -> run ->
checkpoints.

- At start, rank 0 records the shard folder's dataset artifact (monitoring.dataset, the one the
  pipeline logs: the same files, the same digest) as an input of the run. Shards made elsewhere get a
  new artifact this way.
- The manifest's sha256 is kept in the trainer state: a resume on other data is refused
  (`check_resume_data`), unless `data.allow_changed=true`.
- Each checkpoint, once durable, is a reference artifact of type `model` (`CheckpointArtifacts`):
  nothing is uploaded, its files stay where they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitoring.dataset import dataset_artifact
from monitoring.wandb_run import artifact_files_folder, use_as_input
from pretrain.config import DataConfig
from shard_format.errors import ConfigError

DATA_SHA256 = "data_manifest_sha256"  # the trainer-state key


def check_resume_data(data: DataConfig, sha256: str, state: dict, checkpoint: os.PathLike | str) -> str | None:
    """Refuse to resume from `checkpoint` (trainer state `state`) on data whose manifest sha256 is not the
    one it was trained on, unless `data.allow_changed`; then the warning to print (else None)."""
    saved = state.get(DATA_SHA256)
    if saved is None or saved == sha256:
        return None
    both = (f"data.path={data.path} (manifest sha256 {sha256}), but the checkpoint {checkpoint} was trained on "
            f"{state.get('data_path')} (manifest sha256 {saved}, trainer state key {DATA_SHA256})")
    if not data.allow_changed:
        raise ConfigError(f"data.path: other data than the checkpoint's: {both}; set data.allow_changed=true "
                          f"to resume on it anyway")
    return f"warning: resuming on other data (data.allow_changed=true): {both}"


def use_dataset(run, data_path: str) -> None:
    """Record the dataset artifact of `data_path` as an input of `run` (its files staged in the run folder)."""
    use_as_input(run, dataset_artifact(data_path, artifact_files_folder(run)))


def checkpoint_artifact_name(run_id: str) -> str:
    return f"checkpoints-{run_id}"


class CheckpointArtifacts:
    """`CheckpointCallback`'s `on_durable` hook on rank 0: logs checkpoint `path` as a new version of
    the run's `checkpoints-<run id>` artifact, aliases `latest` and `step-<N>`; metadata from the
    trainer state saved with it (step, tokens, last validation loss, the data's manifest sha256)."""

    def __init__(self, run):
        self.run = run

    def __call__(self, path: Path, step: int, state: dict) -> None:
        import wandb

        path = Path(path).resolve()
        metadata = {"step": step, "tokens": int(state["data"]["samples_consumed"]) * int(state["seq_len"]),
                    "val_loss": state.get("val_loss"), DATA_SHA256: state.get(DATA_SHA256), "path": str(path)}
        artifact = wandb.Artifact(checkpoint_artifact_name(self.run.id), type="model", metadata=metadata)
        artifact.add_reference(path.as_uri(), name=path.name, checksum=False)
        self.run.log_artifact(artifact, aliases=["latest", f"step-{step}"])
