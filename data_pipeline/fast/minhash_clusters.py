"""MinHash stage 3 (clusters of near-duplicates) held in numpy arrays: datatrove's output, a few bytes a document.

datatrove's `MinhashDedupCluster` unions the duplicate pairs written by `MinhashDedupBuckets` in Python dicts
keyed by (file, doc) tuples, well over a hundred bytes for each document that appears in a pair. This step
encodes each (file, doc) as one uint64 and gives the documents compact ids in key order (`np.unique`), so its
union-find is two integer arrays indexed by id.

Which member of a cluster is kept depends on the order of the unions: datatrove unions by size, the larger
set's root becoming the root of both, the first document of the pair winning ties, and the index sentinel
(`SENTINEL`, `SENTINEL`) always being the root of its set. The same unions in the same order give the same roots,
so pairs are applied in file and record order. Most pairs join two documents that earlier pairs already put in one
set (every bucket repeats its clusters), and those are found for a whole block at once; only the pairs left are
applied one at a time. The outputs are then computed for all documents at once and written a file at a time:

- `<file:06d>.remove`: uint32 doc ids, ascending, of the documents that are not their set's root;
- `<file:06d>.clusters` (save_cluster_id): (doc, cluster id) uint32 pairs for every document in a pair, cluster
  ids numbered from 0 in the order of each cluster's smallest (file, doc);
- `<file:06d>.sizes` (save_cluster_size): (doc, size of its cluster) uint32 pairs.

Memory: the sorted keys (8 bytes), parent and set size (4 + 4 bytes below 2**31 documents) per document in a
pair; collecting the keys and computing the cluster ids briefly take about as much again (peak RSS ~40 bytes per
document in bench/minhash_clusters.py, against ~160-180 for datatrove's step). Pairs are read `block_pairs` at a
time, a few tens of MiB of temporaries whatever the input's size. The pairs files are read twice: once for the
keys, once for the unions.
Verified against datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import SENTINEL, MinhashConfig
from datatrove.utils.logging import logger
from datatrove.utils.stats import MetricStats

from shard_format.atomic import write_bytes_atomic

PAIR_BYTES = 16  # file1, doc1, file2, doc2 as little-endian uint32
SENTINEL_KEY = (SENTINEL << 32) | SENTINEL
_DOC_MASK = np.uint64(0xFFFFFFFF)
_PROGRESS_SECONDS = 5.0
_PYTHON_LIST_LEN = 1 << 16  # pairs handed to the one-by-one loop at a time, as Python ints (~70 bytes a pair)


class TruncatedPairsFile(ValueError):
    pass


def pair_keys(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(file << 32 | doc) of the first and of the second document of each (n, 4) uint32 record."""
    keys = []
    for file_column in (0, 2):
        key = records[:, file_column].astype(np.uint64)
        key <<= np.uint64(32)
        key |= records[:, file_column + 1]
        keys.append(key)
    return keys[0], keys[1]


class _Progress:
    """Logs how far a pass over the pairs files has got, at most every few seconds."""

    def __init__(self, label: str, total_bytes: int, total_files: int):
        self.label, self.total_bytes, self.total_files = label, total_bytes, total_files
        self.done_bytes = self.done_files = 0
        self.started = self.logged = time.monotonic()

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        self.done_bytes += nbytes
        self.done_files += files
        now = time.monotonic()
        if now - self.logged >= _PROGRESS_SECONDS:
            self.logged = now
            logger.info(f"{self.label}: {self.done_bytes / 2**20:,.0f} of {self.total_bytes / 2**20:,.0f} MiB of pairs "
                        f"({self.done_files} of {self.total_files} files) in {now - self.started:,.0f}s")


class DuplicateForest:
    """Union-find over the documents that appear in pairs, with datatrove's choice of root for every union."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys  # sorted, unique uint64 (file << 32 | doc)
        n = len(keys)
        self.id_dtype = np.int32 if n < 2**31 else np.int64
        self.parent = np.arange(n, dtype=self.id_dtype)
        self.size = np.ones(n, dtype=self.id_dtype)
        self.sentinel = n - 1 if n and keys[-1] == SENTINEL_KEY else -1

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """Looked up in key order: each search then starts near the last one, three times faster than at random."""
        order = np.argsort(keys)
        ids = np.empty(len(keys), dtype=self.id_dtype)
        ids[order] = np.searchsorted(self.keys, keys[order])
        return ids

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """The current root of each id; union by size keeps the trees O(log n) deep."""
        roots = self.parent[ids]
        pending = np.flatnonzero(self.parent[roots] != roots)
        while len(pending):
            roots[pending] = self.parent[roots[pending]]
            pending = pending[self.parent[roots[pending]] != roots[pending]]
        return roots

    def union_in_order(self, first: np.ndarray, second: np.ndarray) -> int:
        """Unions each (first[i], second[i]) in turn, as datatrove would; returns how many were done one by one."""
        if not len(first):
            return 0
        first_roots, second_roots = self.roots(first), self.roots(second)
        # these already share a set: unions only ever grow sets, so they would still share it by their turn
        apart = np.flatnonzero(first_roots != second_roots)
        for start in range(0, len(apart), _PYTHON_LIST_LEN):
            chunk = apart[start:start + _PYTHON_LIST_LEN]
            self._union_one_by_one(first_roots[chunk].tolist(), second_roots[chunk].tolist())
        touched = np.concatenate([first[apart], second[apart]])
        self.parent[touched] = self.roots(touched)  # path compression for the documents of this block
        return len(apart)

    def _union_one_by_one(self, first_roots: list[int], second_roots: list[int]) -> None:
        parent, size, sentinel = memoryview(self.parent), memoryview(self.size), self.sentinel
        for a, b in zip(first_roots, second_roots):
            while parent[a] != a:
                a = parent[a]
            while parent[b] != b:
                b = parent[b]
            if a == b:
                continue
            size_a, size_b = size[a], size[b]
            if b == sentinel or (a != sentinel and size_a < size_b):
                a, b = b, a
            parent[b] = a
            size[a] = size_a + size_b

    def final_roots(self) -> np.ndarray:
        """Points every parent at its root (in place) and returns the parents."""
        while True:
            grandparents = self.parent[self.parent]
            if np.array_equal(grandparents, self.parent):
                return self.parent
            self.parent[:] = grandparents


def merge_unique(parts: list[np.ndarray], sorted_parts: bool = False) -> np.ndarray:
    """The sorted unique values of uint64 arrays (each already sorted if `sorted_parts`, which timsort then merges
    as runs); empties `parts` so that the inputs are freed early."""
    values = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    parts.clear()
    values.sort(kind="stable" if sorted_parts else "quicksort")
    keep = np.empty(len(values), dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def cluster_ids(roots: np.ndarray) -> np.ndarray:
    """uint32 cluster id of each document: clusters numbered in the order of their first (smallest) document."""
    n = len(roots)
    ids = np.arange(n, dtype=roots.dtype)
    first_member = np.full(n, n, dtype=roots.dtype)
    np.minimum.at(first_member, roots, ids)
    first_member = first_member[roots]
    starts_so_far = np.cumsum(first_member == ids, dtype=np.uint32)
    del ids
    return starts_so_far[first_member] - np.uint32(1)


class FastMinhashDedupCluster(PipelineStep):
    """datatrove's `MinhashDedupCluster` with its union-find in numpy arrays: the same files, byte for byte, so
    `MinhashDedupFilter` (with `load_cluster_ids` / `load_cluster_sizes`) reads them unchanged."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash stage 3 (numpy)"

    def __init__(self, input_folder: DataFolderLike, output_folder: DataFolderLike, config: MinhashConfig | None = None,
                 save_cluster_id: bool = False, save_cluster_size: bool = False, ignore_index_matches: bool = False,
                 block_pairs: int = 1 << 18):
        super().__init__()
        if block_pairs < 1:
            raise ValueError(f"block_pairs must be >= 1, got {block_pairs}")
        self.input_folder, self.output_folder = get_datafolder(input_folder), get_datafolder(output_folder)
        if not self.output_folder.is_local():
            raise ValueError(f"{self.output_folder.path}: the cluster files are written to a local folder (work_dir)")
        self.config = MinhashConfig() if config is None else config
        self.save_cluster_id, self.save_cluster_size = save_cluster_id, save_cluster_size
        self.ignore_index_matches = bool(ignore_index_matches)
        self.block_pairs = block_pairs

    def pair_blocks(self, filename: str) -> Iterator[np.ndarray]:
        """(n, 4) uint32 records of one pairs file, `block_pairs` at a time."""
        block_bytes = self.block_pairs * PAIR_BYTES
        with self.input_folder.open(filename, "rb") as f:
            offset, rest = 0, b""
            while chunk := f.read(block_bytes - len(rest)):
                data = rest + chunk if rest else chunk
                whole = len(data) - len(data) % PAIR_BYTES
                rest = data[whole:]
                if whole:
                    yield np.frombuffer(data, dtype="<u4", count=whole // 4).reshape(-1, 4)
                offset += whole
            if rest:
                raise TruncatedPairsFile(f"{self.input_folder.resolve_paths(filename)}: truncated pairs file, {len(rest)} "
                                         f"bytes after the last whole {PAIR_BYTES}-byte pair (at byte {offset})")

    def keyed_pairs(self, files: list[str], progress: _Progress) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for filename in files:
            for records in self.pair_blocks(filename):
                first, second = pair_keys(records)
                if self.ignore_index_matches:
                    kept = first != np.uint64(SENTINEL_KEY)
                    first, second = first[kept], second[kept]
                yield first, second
                progress.advance(nbytes=len(records) * PAIR_BYTES)
            progress.advance(files=1)

    def collect_documents(self, files: list[str], total_bytes: int) -> np.ndarray:
        """Sorted unique keys of every document in a pair: per-block uniques, merged into the keys so far whenever
        they reach a quarter of them (so a merge briefly holds about 2.5 times the keys, and each key is merged
        a bounded number of times on average)."""
        progress = _Progress("clusters, pass 1 of 2 (documents)", total_bytes, len(files))
        parts, merged_len, pending_len = [], 0, 0
        for first, second in self.keyed_pairs(files, progress):
            parts.append(merge_unique([first, second]))
            pending_len += len(parts[-1])
            del first, second
            if pending_len >= max(merged_len // 4, self.block_pairs):
                parts = [merge_unique(parts, sorted_parts=True)]
                merged_len, pending_len = len(parts[0]), 0
        return merge_unique(parts, sorted_parts=True)

    def _add_stats(self, label: str, values: np.ndarray | None = None, count: int = 0, unit: str | None = None) -> None:
        """What `stat_update(label, value=v)` for each value (or `count` times 1) would add, from numpy aggregates."""
        if values is None:
            stats = MetricStats(total=count, n=count, mean=1.0, min=1, max=1) if count else MetricStats()
        elif len(values):
            mean = float(values.mean())
            stats = MetricStats(total=int(values.sum(dtype=np.int64)), n=len(values), mean=mean, min=int(values.min()),
                                max=int(values.max()), _running_variance=float(((values - mean) ** 2).sum()))
        else:
            stats = MetricStats()
        if unit:
            stats.unit = unit
        self.stats[label] += stats

    def _write(self, name: str, data: bytes) -> None:
        # the filter stage reads these as soon as they exist: never half written (the state folder is local)
        write_bytes_atomic(self.output_folder.resolve_paths(name), data)

    def write_outputs(self, keys: np.ndarray, roots: np.ndarray, set_size: np.ndarray) -> None:
        n = len(keys)
        removed = roots != np.arange(n, dtype=roots.dtype)
        is_root = ~removed
        self._add_stats("duplicates", count=n)
        self._add_stats("to_remove", count=int(removed.sum()))
        cluster_id = cluster_ids(roots) if self.save_cluster_id else None
        if cluster_id is not None:
            self._add_stats("clusters", count=int(is_root.sum()))
        self._add_stats("cluster_size", values=set_size[is_root], unit="cluster")
        del is_root
        start = 0
        while start < n:
            file = int(keys[start]) >> 32
            end = int(np.searchsorted(keys, np.uint64((file + 1) << 32))) if file < SENTINEL else n
            stem = f"{file:06d}"
            docs = (keys[start:end] & _DOC_MASK).astype("<u4")
            removed_docs = docs[removed[start:end]]
            if len(removed_docs):
                self._write(f"{stem}.remove", removed_docs.tobytes())
            if cluster_id is not None:
                self._write(f"{stem}.clusters", np.column_stack([docs, cluster_id[start:end]]).astype("<u4").tobytes())
            if self.save_cluster_size:
                self._write(f"{stem}.sizes", np.column_stack([docs, set_size[roots[start:end]]]).astype("<u4").tobytes())
            start = end

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ValueError(f"{type(self).__name__} runs as 1 task, not {world_size}")
        files = self.input_folder.list_files(glob_pattern="*.dups")
        if len(files) % self.config.num_buckets:
            raise ValueError(f"{self.input_folder.path}: {len(files)} .dups files, not a multiple of the "
                             f"{self.config.num_buckets} buckets")
        with self.track_time():
            sizes = {name: self.input_folder.size(name) for name in files}
            for name, nbytes in sizes.items():
                if nbytes % PAIR_BYTES:
                    raise TruncatedPairsFile(f"{self.input_folder.resolve_paths(name)}: truncated pairs file, {nbytes} "
                                             f"bytes is not a whole number of {PAIR_BYTES}-byte pairs")
            total_bytes = sum(sizes.values())
            keys = self.collect_documents(files, total_bytes)
            logger.info(f"clusters: {len(keys):,} documents in {total_bytes // PAIR_BYTES:,} pairs")
            forest = DuplicateForest(keys)
            progress = _Progress("clusters, pass 2 of 2 (unions)", total_bytes, len(files))
            one_by_one = 0
            for first, second in self.keyed_pairs(files, progress):
                one_by_one += forest.union_in_order(forest.ids(first), forest.ids(second))
            logger.info(f"clusters: {one_by_one:,} pairs applied one at a time (the others joined no new sets); writing the files")
            self.write_outputs(keys, forest.final_roots(), forest.size)
