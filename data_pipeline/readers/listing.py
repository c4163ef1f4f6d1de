"""The input files of the configured sources: paths, folders and globs, local or on one fsspec filesystem."""

from __future__ import annotations

import glob
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datatrove.utils.logging import logger

from data_pipeline.config import SourceConfig
from shard_format import storage
from shard_format.errors import ConfigError
from shard_format.storage import StorageOptions

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# Longest suffixes first: ".jsonl.gz" must win over a shorter match.
FORMAT_BY_SUFFIX = {
    ".warc.gz": "warc",
    ".warc": "warc",
    ".wet.gz": "wet",
    ".wet": "wet",
    ".html": "html",
    ".htm": "html",
    ".jsonl.gz": "jsonl",
    ".jsonl.zst": "jsonl",
    ".jsonl": "jsonl",
    ".json.gz": "jsonl",  # the C4 / Dolma convention: gzipped JSON Lines
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
}

@dataclass(frozen=True)
class SourceFile:
    """One input file, with everything needed to read it and to name its documents."""

    source: str  # the source's name
    kind: str  # web | news | books | generic
    quality_profile: str
    path: str  # absolute
    relpath: str  # relative to the path given in the config: the readable part of document ids
    fmt: str  # warc | wet | html | jsonl | parquet | text
    text_key: str = "text"  # JSONL / Parquet only
    id_key: str = "id"


def detect_format(path: str | os.PathLike) -> str | None:
    """The format of a file from its name, or None for an extension we do not read."""
    name = os.path.basename(path).lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    return "text" if "." not in name else None

def list_source_files(sources: Sequence[SourceConfig], storage_options: StorageOptions = None) -> list[SourceFile]:
    """Every readable input file, in source order then path order; raises ConfigError on bad paths.

    A source's paths may be local paths or fsspec URLs (`s3://bucket/prefix/*.jsonl.gz`), all on one
    filesystem; URLs are listed with `storage_options`."""
    files: list[SourceFile] = []
    for i, source in enumerate(sources):
        files.extend(_list_source(i, source, storage_options))
    return files


def _list_source(index: int, source: SourceConfig, storage_options: StorageOptions) -> list[SourceFile]:
    def fail(message: str) -> ConfigError:
        return ConfigError(f"sources[{index}].paths: source {source.name!r}: {message}")

    try:
        tree = _tree_of(source.paths, storage_options)
    except ValueError as e:  # mixed filesystems, or a protocol whose package is missing (StorageError)
        raise fail(str(e)) from e
    bases: list[str] = []
    found: dict[str, str] = {}  # absolute path -> format; a file reached twice is read once
    for given in source.paths:
        path = tree.path_of(given)
        shown = tree.display(path)
        try:
            if _has_magic(path):
                base = _glob_base(path)
                matches = tree.glob(path)
                if not matches:
                    raise fail(f"glob {shown!r} matches nothing")
                candidates = [f for match, is_dir in matches for f in (tree.walk(match) if is_dir else [match])]
            elif (kind := tree.kind(path)) == "directory":
                base, candidates = path, list(tree.walk(path))
            elif kind == "file":
                if detect_format(path) is None:
                    raise fail(f"{shown!r} has an unknown extension; readable: {', '.join(FORMAT_BY_SUFFIX)} or none")
                base, candidates = tree.dirname(path), [path]
            else:
                raise fail(f"{shown!r} does not exist")
        except ConfigError:
            raise
        except Exception as e:  # a remote filesystem: no such bucket, no permission, no credentials, no network
            raise fail(f"cannot list {shown!r}: {type(e).__name__}: {e}") from e
        bases.append(tree.absolute(base))
        for candidate in candidates:
            fmt = detect_format(candidate)
            if fmt is None:
                logger.info(f"source {source.name!r}: skipping {candidate} (unknown extension)")
                continue
            found.setdefault(tree.absolute(candidate), fmt)

    if not found:
        raise fail(f"no readable input files in {list(source.paths)}")
    # With several paths, ids are relative to their common folder, so that two files of the same name
    # under different paths still get different ids.
    root = tree.commonpath(bases)
    return [
        SourceFile(
            source=source.name,
            kind=source.kind,
            quality_profile=source.quality or source.kind,
            path=tree.display(path),
            relpath=tree.relpath(path, root),
            fmt=fmt,
            text_key=source.text_key,
            id_key=source.id_key,
        )
        for path, fmt in sorted(found.items())
    ]


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: `data/*/x.jsonl` -> `data`."""
    parts = Path(pattern).parts
    static = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        static.append(part)
    return str(Path(*static)) if static else "."


def _tree_of(paths: Sequence[str], storage_options: StorageOptions) -> _LocalTree | _RemoteTree:
    """Where a source's files are: the local filesystem, or the one remote filesystem all its URLs are on."""
    protocols = {storage.protocol_of(p) if storage.is_remote(p) else None for p in paths}
    if len(protocols) > 1:
        raise ValueError(f"mixes local paths and URLs of different filesystems: {list(paths)}")
    if protocols <= {None}:
        return _LocalTree()
    fs, _ = storage.resolve(paths[0], storage_options)
    return _RemoteTree(fs, storage_options)


class _LocalTree:
    """Local (and shared POSIX) paths, through os and glob; ids are relative to the given paths."""

    @staticmethod
    def path_of(given: str) -> str:
        return os.path.expanduser(storage.local_path(given))

    @staticmethod
    def glob(pattern: str) -> list[tuple[str, bool]]:
        return [(match, os.path.isdir(match)) for match in sorted(glob.glob(pattern, recursive=True))]

    @staticmethod
    def kind(path: str) -> str | None:
        return "directory" if os.path.isdir(path) else "file" if os.path.isfile(path) else None

    @staticmethod
    def walk(folder: str) -> Iterator[str]:
        """Files under `folder`, recursively, leaving out hidden files and folders."""
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):  # data folders are often links
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith("."):
                    yield os.path.join(dirpath, name)

    @staticmethod
    def dirname(path: str) -> str:
        return os.path.dirname(path) or "."

    absolute = staticmethod(os.path.abspath)
    commonpath = staticmethod(os.path.commonpath)

    @staticmethod
    def relpath(path: str, root: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    @staticmethod
    def display(path: str) -> str:
        return path


class _RemoteTree:
    """Paths on an fsspec filesystem (`bucket/key`, without the protocol); files are named by their URL.

    Ids are built like local ones, relative to the given paths, so reading a bucket gives the same ids as
    reading a local copy of it."""

    def __init__(self, fs: AbstractFileSystem, storage_options: StorageOptions):
        self.fs, self.storage_options = fs, storage_options

    def path_of(self, given: str) -> str:
        return storage.resolve(given, self.storage_options)[1].rstrip("/")

    def glob(self, pattern: str) -> list[tuple[str, bool]]:
        base = _glob_base(pattern)
        matches = self.fs.glob(pattern, detail=True)
        return [
            (path, info["type"] == "directory")
            for path, info in sorted(matches.items())
            if not _is_hidden(path, base)
        ]

    def kind(self, path: str) -> str | None:
        try:
            return self.fs.info(path)["type"]
        except FileNotFoundError:
            return None

    def walk(self, folder: str) -> Iterator[str]:
        for path in sorted(self.fs.find(folder)):
            if not _is_hidden(path, folder):
                yield path

    @staticmethod
    def dirname(path: str) -> str:
        return posixpath.dirname(path)

    @staticmethod
    def absolute(path: str) -> str:
        return path

    @staticmethod
    def commonpath(bases: list[str]) -> str:
        return posixpath.commonpath(bases)

    @staticmethod
    def relpath(path: str, root: str) -> str:
        return path[len(root):].lstrip("/") if root else path

    def display(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)


def _is_hidden(path: str, base: str) -> bool:
    """Whether a file or folder below `base` on the way to `path` is hidden (its name starts with a dot)."""
    below = path[len(base):] if path.startswith(base) else path
    return any(part.startswith(".") for part in below.split("/"))
