"""Local paths and fsspec URLs (`s3://bucket/prefix`, `gs://...`) behind one small set of functions.

A local path (or `file://` URL) goes through `os` exactly as before; anything else through the fsspec
filesystem of its protocol, created with the run's `storage_options` (credentials and endpoint otherwise
come from the usual environment, e.g. AWS_ACCESS_KEY_ID / AWS_ENDPOINT_URL for s3fs). fsspec, and the
protocol's package such as s3fs, are imported on first use of a URL only, so local runs never load them.

Writes are atomic: a reader sees the old object or the complete new one, never a part. Locally that is
`shard_format.atomic`; object stores publish an upload only once it is
complete, so a remote write is a single PUT (or a multipart upload, completed in one call).
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shard_format import atomic
from shard_format.errors import StorageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

StorageOptions = Mapping[str, Any] | None

_LOCAL_PROTOCOLS = ("file", "local")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")  # two letters at least: `C://` is a Windows drive
# a remote file is fetched in blocks of this size, read ahead while the previous one is consumed
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024
_READ_BUFFER = 1 << 20


def protocol_of(path: str | os.PathLike) -> str | None:
    """The URL's protocol (`s3`, the first of a chain like `simplecache::s3://`), or None for a plain path."""
    text = os.fspath(path)
    if "::" in text:
        text = text.split("::", 1)[0] + "://"
    match = _URL.match(text)
    return match.group(1).lower() if match else None


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL read and written through fsspec rather than a local (or shared POSIX) path."""
    return protocol_of(path) not in (None, *_LOCAL_PROTOCOLS)


def local_path(path: str | os.PathLike) -> str:
    """A local path as `os` takes it: `file:///x` -> `/x`; plain paths unchanged."""
    text = os.fspath(path)
    protocol = protocol_of(text)
    if protocol in _LOCAL_PROTOCOLS:
        return text.split("://", 1)[1]
    if protocol is not None:
        raise ValueError(f"{text} is a URL, not a local path")
    return text


def resolve(url: str | os.PathLike, storage_options: StorageOptions = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the path on it (`s3://b/k` -> (S3FileSystem, `b/k`)).

    Raises StorageError naming the package to install when the protocol's filesystem is not installed.
    """
    import fsspec
    from fsspec.registry import known_implementations

    url = os.fspath(url)
    protocol = protocol_of(url) or "file"
    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None)
        if missing is None and protocol in known_implementations:
            missing = known_implementations[protocol]["class"].split(".")[0]
        package = missing.split(".")[0] if missing else "the package for this protocol"
        raise StorageError(
            f"{url}: {protocol}:// URLs need the package {package}, which is not installed (pip install {package})"
        ) from exc
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise StorageError(f"{url}: fsspec knows no filesystem for the protocol {protocol!r}") from exc
        raise


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` for a local path or a URL (pathlib would turn `s3://b` into `s3:/b`)."""
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def bucket_of(url: str) -> str:
    """The URL of the bucket (first path component) a remote URL lies in: `s3://b/x/y` -> `s3://b`."""
    protocol, _, rest = url.partition("://")
    return f"{protocol}://{rest.lstrip('/').split('/', 1)[0]}"


# ---------------------------------------------------------------------------------------------------------
# Reading


def exists(path: str | os.PathLike, storage_options: StorageOptions = None) -> bool:
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs, fs_path = resolve(path, storage_options)
    return fs.exists(fs_path)


def isdir(path: str | os.PathLike, storage_options: StorageOptions = None) -> bool:
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    fs, fs_path = resolve(path, storage_options)
    return fs.isdir(fs_path)


def read_bytes(path: str | os.PathLike, storage_options: StorageOptions = None) -> bytes:
    """The whole file; for whole-file formats and small files only."""
    if not is_remote(path):
        return Path(local_path(path)).read_bytes()
    fs, fs_path = resolve(path, storage_options)
    return fs.cat_file(fs_path)


def open_binary(path: str | os.PathLike, storage_options: StorageOptions = None) -> IO[bytes]:
    """A buffered binary stream (with `peek`, `read1`, `readline`) that fetches a remote file block by block."""
    if not is_remote(path):
        return open(local_path(path), "rb")
    fs, fs_path = resolve(path, storage_options)
    remote = fs.open(fs_path, "rb", block_size=REMOTE_BLOCK_SIZE, cache_type="readahead")
    return io.BufferedReader(remote, buffer_size=_READ_BUFFER)


# ---------------------------------------------------------------------------------------------------------
# Writing


def write_bytes_atomic(path: str | os.PathLike, data: bytes, storage_options: StorageOptions = None) -> str:
    """Write `data` to a local path or a URL so that readers never see a partial file; returns the path."""
    path = os.fspath(path)
    if is_remote(path):
        fs, fs_path = resolve(path, storage_options)
        fs.pipe_file(fs_path, data)
        return path
    atomic.write_bytes_atomic(local_path(path), data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, storage_options: StorageOptions = None) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"), storage_options)


def upload_file(local: str | os.PathLike, dest: str | os.PathLike, storage_options: StorageOptions = None) -> str:
    """Copy a local file to a URL or another local path, atomically; returns the destination."""
    dest = os.fspath(dest)
    if is_remote(dest):
        fs, fs_path = resolve(dest, storage_options)
        fs.put_file(os.fspath(local), fs_path)
        return dest
    with open(local, "rb") as src, atomic.AtomicFile(local_path(dest)) as fh:
        shutil.copyfileobj(src, fh.file, _READ_BUFFER)
    return dest


def upload_folder(local: str | os.PathLike, dest: str | os.PathLike, storage_options: StorageOptions = None) -> list[str]:
    """Copy every file under a local folder to the same relative paths under `dest` (a URL or a local
    folder), each atomically; returns the destinations in path order. Remote uploads run concurrently."""
    local = os.fspath(local)
    if not os.path.isdir(local):
        raise NotADirectoryError(f"{local} is not a folder")
    relpaths = sorted(
        Path(os.path.relpath(os.path.join(dirpath, name), local)).as_posix()
        for dirpath, _, names in os.walk(local)
        for name in names
    )
    sources = [os.path.join(local, *rel.split("/")) for rel in relpaths]
    dests = [join(dest, *rel.split("/")) for rel in relpaths]
    if is_remote(dest) and relpaths:
        fs, _ = resolve(dest, storage_options)
        fs.put(sources, [resolve(d, storage_options)[1] for d in dests])
        return dests
    for src, dst in zip(sources, dests):
        upload_file(src, dst)
    return dests
