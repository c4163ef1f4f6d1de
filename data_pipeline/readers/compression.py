"""Input files as decompressed binary streams (.gz, .zst or as they are), local or streamed from a URL."""

from __future__ import annotations

import gzip
import io
import zlib

import zstandard

from shard_format import storage
from shard_format.storage import StorageOptions

_READ_CHUNK = 1 << 20
# what reading a damaged .gz or .zst raises (BadGzipFile is an OSError)
DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)


def open_decompressed(path: str, storage_options: StorageOptions = None) -> io.BufferedIOBase:
    """A binary stream of the file's content (local or a URL, streamed), decompressed according to its
    extension; closing it closes the file."""
    stream = storage.open_binary(path, storage_options)
    if path.endswith(".gz"):
        return _GzipStream(stream)
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(stream), buffer_size=_READ_CHUNK)
    return stream


class _GzipStream(gzip.GzipFile):
    """Decompresses a stream and closes it with itself (a GzipFile given a stream leaves it open)."""

    def __init__(self, stream: io.BufferedIOBase):
        super().__init__(fileobj=stream, mode="rb")
        self._stream = stream

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stream.close()


class _ZstdReader(io.RawIOBase):
    """Decompresses a zstd file of one or more frames, raising EOFError when the file ends inside a frame.

    zstandard's own `stream_reader` just returns a short read on a truncated file, which would lose the end
    of a file without a word.
    """

    def __init__(self, stream: io.BufferedIOBase):
        self._file = stream
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._inside_frame = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._file.read(_READ_CHUNK)
            if not chunk:
                if self._inside_frame:
                    raise EOFError("zstd data ended in the middle of a frame")
                return 0
            self._pending = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._inside_frame = True
            out.append(self._frame.decompress(chunk))
            if not self._frame.eof:
                break
            chunk = self._frame.unused_data  # the start of the next frame, if any
            self._frame = self._decompressor.decompressobj()
            self._inside_frame = False
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()
