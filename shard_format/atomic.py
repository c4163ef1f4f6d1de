"""Local files that no reader ever sees half written: the one place that writes a file atomically.

The data goes to a temporary file in the destination's folder (a hidden ``.NAME.<random>.tmp``, which no
``*.ds`` or ``*.json`` glob matches), is fsynced, then renamed over the destination, and the folder is
fsynced so that the rename survives a crash. A reader sees the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["AtomicFile", "fsync_directory", "publish_staged", "write_bytes_atomic", "write_text_atomic"]


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Make the renames in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_staged(staged: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename a finished temporary file that was written in several sessions (opened, appended to and closed
    again, so no `AtomicFile` could stay open for it) over `path` in the same folder, durably."""
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staged, path)
    fsync_directory(Path(path).absolute().parent)


class AtomicFile:
    """A file written through a temporary in the same folder.

    As a context manager it publishes on a clean exit and discards on an error. Writers that publish
    several files in a set order call `seal` on each, then `publish(sync_folder=False)` in that order and
    `fsync_directory` once.
    """

    def __init__(self, path: str | os.PathLike[str], *, buffering: int = -1) -> None:
        self.path = Path(path)
        self.folder = self.path.absolute().parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.folder / f".{self.path.name}.{os.urandom(4).hex()}.tmp"
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 minus the umask, like open()
        self.file: IO[bytes] = os.fdopen(fd, "wb", buffering=buffering)

    def write(self, data: bytes | memoryview) -> int:
        return self.file.write(data)

    def seal(self) -> None:
        """Flush the temporary file to stable storage and close it."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def publish(self, *, sync_folder: bool = True) -> None:
        """Seal, then rename over `path` (and fsync the folder unless the caller does it once for many)."""
        self.seal()
        os.replace(self.tmp_path, self.path)
        if sync_folder:
            fsync_directory(self.folder)

    def discard(self) -> None:
        """Close and remove the temporary file; `path` is left as it was."""
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.publish()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def write_bytes_atomic(path: str | os.PathLike[str], *pieces: bytes | memoryview) -> Path:
    """Write the concatenated `pieces` to `path` atomically; returns the path."""
    with AtomicFile(path) as fh:
        for piece in pieces:
            fh.write(piece)
    return fh.path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))

