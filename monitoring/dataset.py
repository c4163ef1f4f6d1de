"""A shard folder as a W&B reference artifact (type `dataset`).

manifest.json, report.json and the tokenizer are added as files; the shards are one reference to
their folder (never uploaded, never read: `checksum=False`, so a 10 TB folder costs nothing). The
artifact's name comes from the manifest's sha256, so the pipeline and the trainer build the same
artifact from the same folder, and W&B resolves both to one version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from shard_format import storage
from shard_format.manifest import MANIFEST_FILE
from shard_format.storage import StorageOptions

REPORT_FILE = "report.json"
TOKENIZER_FOLDER = "tokenizer"


def manifest_sha256(data_dir: str, storage_options: StorageOptions | None = None) -> str:
    return hashlib.sha256(_manifest_bytes(data_dir, storage_options)).hexdigest()


def _manifest_bytes(data_dir: str, storage_options: StorageOptions | None) -> bytes:
    return storage.read_bytes(storage.join(data_dir, MANIFEST_FILE), storage_options)


def artifact_name(sha256: str) -> str:
    return f"data-{sha256[:12]}"


def _reference_uri(data_dir: str) -> str:
    return data_dir if storage.is_remote(data_dir) else Path(data_dir).resolve().as_uri()


def dataset_artifact(data_dir: str, staging_dir: str, storage_options: StorageOptions | None = None):
    """The draft artifact of `data_dir`; its files are first copied to `staging_dir` (inside the run
    folder, so that `wandb sync` of the run folder alone uploads them)."""
    import wandb

    manifest_bytes = _manifest_bytes(data_dir, storage_options)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    staged = Path(staging_dir) / artifact_name(sha)
    names = [MANIFEST_FILE, REPORT_FILE] + [f"{TOKENIZER_FOLDER}/{name}" for name in
                                           _tokenizer_files(data_dir, storage_options)]
    artifact = wandb.Artifact(artifact_name(sha), type="dataset", metadata={
        "manifest_sha256": sha, "path": data_dir, **_manifest_summary(json.loads(manifest_bytes))})
    for name in names:
        source = storage.join(data_dir, name)
        if not storage.exists(source, storage_options):
            continue  # report.json: absent when the shards were made by another tool
        target = staged / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(source, storage_options))
        artifact.add_file(str(target), name=name, policy="immutable")
    for split in ("train", "val"):
        artifact.add_reference(f"{_reference_uri(data_dir).rstrip('/')}/{split}", name=split, checksum=False)
    return artifact


def _tokenizer_files(data_dir: str, storage_options: StorageOptions | None) -> list[str]:
    folder = storage.join(data_dir, TOKENIZER_FOLDER)
    if not storage.isdir(folder, storage_options):
        return []
    fs, path = storage.resolve(folder, storage_options)
    return sorted(os.path.basename(entry.rstrip("/")) for entry in fs.ls(path, detail=False))


def _manifest_summary(manifest: dict) -> dict:
    return {
        "vocab_size": manifest["tokenizer"]["vocab_size"],
        "tokens": {split: body["tokens"] for split, body in manifest["splits"].items()},
        "documents": {split: body["documents"] for split, body in manifest["splits"].items()},
    }


def remove_staged(staging_dir: str) -> None:
    shutil.rmtree(staging_dir, ignore_errors=True)
