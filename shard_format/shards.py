"""The on-disk token shard format: the only code that writes or reads shard files.

A shard named NAME in a folder is made of:

- ``NAME.ds``: the token ids of its documents, concatenated, little-endian uint16 (vocab_size <= 65536)
  or uint32. Every document ends with the EOS token, which the caller appends.
- ``NAME.ds.index``: little-endian uint64, the cumulative end offset (in tokens) of each document.
- ``NAME.ds.metadata``: three lines, ``<tokenizer>|<bytes per token>``, the token count, and the token
  count in human form (``1.23 MT``), no trailing newline.
- optionally ``NAME.bin`` / ``NAME.idx``: the same documents as a Megatron-LM indexed dataset.

These are byte for byte the files datatrove writes (``TokenizedFile``, ``MegatronTokenizedFile``), so
nanotron, ``datatrove.utils.dataset.DatatroveFolderDataset`` and Megatron-LM read them as they are.

Every file of a shard is written under a temporary name, fsynced, then renamed into place, the ``.ds`` last:
a ``.ds`` file that exists is complete, and so are its companions.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import humanize
import numpy as np

from shard_format.atomic import AtomicFile, fsync_directory

__all__ = [
    "FORMATS",
    "TOKEN_DTYPES",
    "ShardInfo",
    "ShardReader",
    "ShardWriter",
    "sha256_file",
    "token_dtype_for_vocab",
]

FORMATS = ("datatrove", "megatron")
TOKEN_DTYPES = (np.dtype("<u2"), np.dtype("<u4"))
_INDEX_DTYPE = np.dtype("<u8")

_MEGATRON_HEADER = b"MMIDIDX\x00\x00"
_MEGATRON_VERSION = 1
# Megatron-LM's DType codes (megatron/core/datasets/indexed_dataset.py). Like datatrove, 4-byte tokens are
# declared int32: the bytes equal our uint32 ids as long as ids stay below 2**31, which __init__ checks.
_MEGATRON_DTYPE_CODES = {2: 8, 4: 4}  # token size in bytes -> code (8: uint16, 4: int32)

_WRITE_BUFFER = 1 << 20


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The token dtype of a shard: uint16 when every id fits (vocab_size <= 65536), else uint32."""
    if not 0 < vocab_size <= 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return TOKEN_DTYPES[0] if vocab_size <= 2**16 else TOKEN_DTYPES[1]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's contents, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_WRITE_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def _metadata_text(tokenizer_name: str, token_size: int, token_count: int) -> str:
    """The contents of a ``.ds.metadata`` file, as datatrove's ``TokenizedFile.write_final_metadata`` writes it.

    One deliberate difference: without a tokenizer name datatrove writes ``Unknown Tokenizer|2|2``, which its
    own ``DocumentTokenizerMerger`` cannot parse (it splits the line into exactly two fields); we write
    ``Unknown Tokenizer|2``.
    """
    name = tokenizer_name or "Unknown Tokenizer"
    return "\n".join([f"{name}|{token_size}", str(token_count), humanize.metric(token_count, unit="T")])


def _megatron_index_bytes(document_lengths: Sequence[int], token_size: int) -> bytes:
    """The contents of a Megatron-LM ``.idx`` file for documents of these lengths (one sequence per document)."""
    sizes = np.asarray(document_lengths, dtype="<i4")
    pointers = np.zeros(len(sizes), dtype="<i8")
    np.cumsum(sizes[:-1], dtype="<i8", out=pointers[1:])
    pointers *= token_size
    # Megatron's document_indices: sequence index where each document starts, plus a final end marker.
    document_indices = np.arange(len(sizes) + 1, dtype="<i8")
    header = b"".join(
        [
            _MEGATRON_HEADER,
            _MEGATRON_VERSION.to_bytes(8, "little"),
            _MEGATRON_DTYPE_CODES[token_size].to_bytes(1, "little"),
            len(sizes).to_bytes(8, "little"),
            len(document_indices).to_bytes(8, "little"),
        ]
    )
    return header + sizes.tobytes() + pointers.tobytes() + document_indices.tobytes()


@dataclass(frozen=True)
class ShardInfo:
    """What a finished shard holds; goes into the dataset manifest."""

    path: str  # name of the .ds file, relative to the writer's folder
    documents: int
    tokens: int
    sha256: str  # of the .ds file
    extra_files: dict[str, str] = field(default_factory=dict)  # companion file name -> its sha256


class _HashedFile(AtomicFile):
    """An atomic file hashed as it is written; `seal` returns its hex SHA-256."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, buffering=_WRITE_BUFFER)
        self._digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self._digest.update(data)
        return super().write(data)

    def seal(self) -> str:
        super().seal()
        return self._digest.hexdigest()


class _OpenShard:
    """The shard being filled: its token streams are written as documents arrive, the rest at `finish`."""

    def __init__(self, folder: Path, name: str, formats: Sequence[str]) -> None:
        self.folder = folder
        self.name = name
        self.document_ends: list[int] = []
        self._files: list[_HashedFile] = []
        self.ds = self._new_file(f"{name}.ds")
        # Megatron's .bin holds exactly the bytes of the .ds file.
        self.bin = self._new_file(f"{name}.bin") if "megatron" in formats else None

    @property
    def num_tokens(self) -> int:
        return self.document_ends[-1] if self.document_ends else 0

    def add(self, tokens: np.ndarray) -> None:
        data = memoryview(tokens).cast("B")
        self.ds.write(data)
        if self.bin is not None:
            self.bin.write(data)
        self.document_ends.append(self.num_tokens + len(tokens))

    def finish(self, tokenizer_name: str, token_size: int) -> ShardInfo:
        """Write the index files, then publish every file of the shard, the .ds last."""
        self._new_file(f"{self.name}.ds.index").write(np.asarray(self.document_ends, dtype=_INDEX_DTYPE).tobytes())
        metadata = _metadata_text(tokenizer_name, token_size, self.num_tokens)
        self._new_file(f"{self.name}.ds.metadata").write(metadata.encode("utf-8"))
        if self.bin is not None:
            lengths = np.diff(self.document_ends, prepend=0)
            self._new_file(f"{self.name}.idx").write(_megatron_index_bytes(lengths, token_size))

        companions = [f for f in self._files if f is not self.ds]
        extra_files = {f.path.name: f.seal() for f in companions}
        ds_sha256 = self.ds.seal()
        # Remove a .ds left by an earlier run first, so that it can never be paired with the new companions.
        self.ds.path.unlink(missing_ok=True)
        for f in companions:
            f.publish(sync_folder=False)
        self.ds.publish(sync_folder=False)
        fsync_directory(self.folder)
        return ShardInfo(
            path=self.ds.path.name,
            documents=len(self.document_ends),
            tokens=self.num_tokens,
            sha256=ds_sha256,
            extra_files=dict(sorted(extra_files.items())),
        )

    def discard(self) -> None:
        """Close and delete the temporary files; files already published stay."""
        for f in self._files:
            f.discard()

    def _new_file(self, file_name: str) -> _HashedFile:
        f = _HashedFile(self.folder / file_name)
        self._files.append(f)
        return f


class ShardWriter:
    """Writes documents into shards of at most `max_tokens_per_shard` tokens named f"{prefix}_{i:05d}" in `folder`.

    Each document is a 1-D array of token ids with the EOS token already appended by the caller. A document
    never spans two shards; one longer than the limit gets a shard of its own. `formats` is a subset of
    `FORMATS` that contains "datatrove": the .ds shard is always written, Megatron .bin/.idx on request.

    Shards are opened on the first document, so a writer that receives none writes no file. `close()` (or
    leaving the `with` block) finishes the last shard and returns every shard's `ShardInfo`; leaving the
    `with` block on an exception discards the unfinished shard and keeps the finished ones.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        prefix: str,
        vocab_size: int,
        max_tokens_per_shard: int,
        formats: Iterable[str] = ("datatrove",),
        tokenizer_name: str = "",
    ) -> None:
        formats = tuple(formats)
        if unknown := set(formats) - set(FORMATS):
            raise ValueError(f"unknown shard formats {sorted(unknown)}; expected a subset of {FORMATS}")
        if "datatrove" not in formats:
            raise ValueError("the datatrove .ds format is always written: formats must include 'datatrove'")
        if max_tokens_per_shard <= 0:
            raise ValueError(f"max_tokens_per_shard must be positive, got {max_tokens_per_shard}")
        if not prefix or "/" in prefix or os.sep in prefix:
            raise ValueError(f"prefix must be a plain, non-empty file name prefix, got {prefix!r}")
        if "|" in tokenizer_name or "\n" in tokenizer_name:
            raise ValueError(f"tokenizer_name cannot contain '|' or a newline (metadata separators): "
                             f"{tokenizer_name!r}")
        self.dtype = token_dtype_for_vocab(vocab_size)
        if "megatron" in formats and vocab_size > 2**31:
            raise ValueError("the Megatron format stores 4-byte tokens as int32: vocab_size must be <= 2**31")

        self.folder = Path(folder)
        self.prefix = prefix
        self.vocab_size = vocab_size
        self.max_tokens_per_shard = max_tokens_per_shard
        self.formats = formats
        self.tokenizer_name = tokenizer_name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._shards: list[ShardInfo] = []
        self._open: _OpenShard | None = None
        self._closed = False

    @property
    def shards(self) -> list[ShardInfo]:
        """The shards finished so far, in order."""
        return list(self._shards)

    def write(self, tokens: np.ndarray | Sequence[int]) -> None:
        """Append one document (1-D token ids, EOS included) to the current shard, starting a new one if full."""
        if self._closed:
            raise ValueError("write() on a closed ShardWriter")
        tokens = self._validated(tokens)
        if self._open is not None and self._open.num_tokens + len(tokens) > self.max_tokens_per_shard:
            self._finish_open_shard()
        if self._open is None:
            self._open = _OpenShard(self.folder, f"{self.prefix}_{len(self._shards):05d}", self.formats)
        self._open.add(tokens)

    def close(self) -> list[ShardInfo]:
        """Finish the current shard and return the `ShardInfo` of every shard written. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._open is not None:
                self._finish_open_shard()
        return self.shards

    def abort(self) -> None:
        """Discard the unfinished shard (its temporary files); finished shards stay."""
        self._closed = True
        if self._open is not None:
            self._open.discard()
            self._open = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _validated(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        array = np.asarray(tokens)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"a document must be a non-empty 1-D array of token ids, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got values in [{low}, {high}]")
        return np.ascontiguousarray(array, dtype=self.dtype)

    def _finish_open_shard(self) -> None:
        assert self._open is not None
        try:
            info = self._open.finish(self.tokenizer_name, self.dtype.itemsize)
        except BaseException:
            self._open.discard()
            self._open = None
            raise
        self._shards.append(info)
        self._open = None


class ShardReader:
    """Read-only, memory-mapped view of one ``.ds`` shard and its ``.ds.index``.

    Tokens are never copied into RAM: `document` and `tokens` return read-only views of the mapping.
    The token size is derived from the file size and the token count, so the metadata file is not
    needed. `num_tokens`, when the caller knows it (a manifest lists it), spares reading the index:
    a reader that only slices tokens (the packed training loader) never loads it; the document
    boundaries are read on first use.
    """

    def __init__(self, path: str | os.PathLike[str], num_tokens: int | None = None) -> None:
        self.path = Path(path)
        file_size = self.path.stat().st_size
        if num_tokens is None:
            ends = self._read_index()
            self.__dict__["document_ends"] = ends  # the cached property's value
            self.num_tokens = int(ends[-1]) if len(ends) else 0
        else:
            self.num_tokens = int(num_tokens)
        if self.num_tokens == 0:
            if file_size:
                raise ValueError(f"{self.path}: {file_size} bytes but it should hold no tokens")
            self.dtype = TOKEN_DTYPES[0]
            self._tokens = np.empty(0, dtype=self.dtype)
            return
        token_size, remainder = divmod(file_size, self.num_tokens)
        if remainder or token_size not in (dtype.itemsize for dtype in TOKEN_DTYPES):
            raise ValueError(f"{self.path}: {file_size} bytes do not hold {self.num_tokens} tokens of 2 or 4 bytes "
                             f"(a truncated shard, or another token dtype)")
        self.dtype = next(dtype for dtype in TOKEN_DTYPES if dtype.itemsize == token_size)
        # A plain ndarray view of the read-only mapping; it keeps the mapping alive.
        self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r").view(np.ndarray)

    @functools.cached_property
    def document_ends(self) -> np.ndarray:
        """uint64 cumulative document ends, from the index file (read on first use)."""
        ends = self._read_index()
        if (int(ends[-1]) if len(ends) else 0) != self.num_tokens:
            raise ValueError(f"{self.path}.index: its documents end at token {int(ends[-1]) if len(ends) else 0}, "
                             f"but the shard holds {self.num_tokens}")
        return ends

    def _read_index(self) -> np.ndarray:
        ends = np.fromfile(self.path.with_name(self.path.name + ".index"), dtype=_INDEX_DTYPE)
        if np.any(np.diff(ends.astype(np.int64), prepend=0) < 0):
            raise ValueError(f"{self.path}.index: document ends are not non-decreasing")
        return ends

    @property
    def num_documents(self) -> int:
        return len(self.document_ends)

    def __len__(self) -> int:
        return self.num_documents

    def document(self, i: int) -> np.ndarray:
        """The tokens of document `i` (EOS included), a view into the mapped file. Negative `i` counts from the end."""
        if not -self.num_documents <= i < self.num_documents:
            raise IndexError(f"document {i} out of range for a shard of {self.num_documents} documents")
        i %= self.num_documents
        start = int(self.document_ends[i - 1]) if i else 0
        return self._tokens[start : int(self.document_ends[i])]

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the shard across document boundaries, a view into the mapped file."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) out of range for a shard of {self.num_tokens} tokens")
        return self._tokens[start:stop]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_documents):
            yield self.document(i)
