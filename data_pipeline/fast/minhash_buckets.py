"""The MinHash bucket stage in numpy: the same `.dups` files as datatrove's `MinhashDedupBuckets`.

datatrove's step merges the sorted signature files of one LSH bucket with a heap of Python objects, a
few comparisons of tuples per signature and per merged file, so its cost per signature grows with the
number of files (tasks). Here a task takes its hash range of every file (a binary search in the memory-
mapped file), sorts the rows once in numpy and finds the runs of equal signatures with array
comparisons; its memory is its share of the bucket (~90 bytes per signature row at 8 hashes per band).

Same output, byte for byte (tests/fast/test_minhash_buckets.py): the task's hash range is the one datatrove
derives from the bucket's first file; in the order of (signature, file, document) every signature equal
to the one before it gives the pair (file stem and document of the one before, its own). Index folders
(deduplicating against an earlier corpus) are not supported: the pipeline does not use them.
Verified against datatrove 0.10 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.logging import logger

from data_pipeline.fast.minhash_signature import MERSENNE_PRIME
from shard_format.atomic import write_bytes_atomic

SIGNATURE_SUFFIX = ".minhash.sig"


def signature_row_dtype(config: MinhashConfig) -> np.dtype:
    """One row of a signature file: the band's hashes, then the document's index, packed little-endian."""
    return np.dtype([("sig", np.dtype(config.hash_config.np_dtype).newbyteorder("<"), (config.hashes_per_bucket,)),
                     ("doc", "<u4")])


class FastMinhashDedupBuckets(PipelineStep):
    """One task per (LSH bucket, hash range): the duplicate pairs of its range, as datatrove writes them."""

    name = "minhash buckets"
    type = "🫂 - DEDUP"

    def __init__(self, input_folder: str, output_folder: str, config: MinhashConfig):
        super().__init__()
        self.input_folder, self.output_folder, self.config = Path(input_folder), Path(output_folder), config
        self.row_dtype = signature_row_dtype(config)

    def _signatures(self, path: Path) -> np.ndarray:
        size = path.stat().st_size
        if size % self.row_dtype.itemsize:
            raise ValueError(f"{path}: {size} bytes is not a whole number of {self.row_dtype.itemsize}-byte "
                             f"signature rows (a truncated file?)")
        if size == 0:
            return np.empty(0, dtype=self.row_dtype)
        return np.memmap(path, dtype=self.row_dtype, mode="r")

    def hash_range(self, first_file: np.ndarray | None, worker: int, workers: int) -> tuple[int, int]:
        """[low, high) of the first hash for this worker of its bucket: cut at evenly spaced rows of the first file."""
        high_default = MERSENNE_PRIME if self.config.hash_config.precision == 64 else self.config.hash_config.max
        low, high = 0, high_default
        if workers > 1 and first_file is not None and len(first_file):
            lines = len(first_file)
            if lines < workers:
                raise ValueError(f"{workers} tasks for one bucket, but its first signature file has only {lines} rows")
            if worker > 0:
                low = int(first_file["sig"][(lines // workers) * worker, 0])
            if worker + 1 < workers:
                high = int(first_file["sig"][(lines // workers) * (worker + 1), 0])
        return low, high

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        buckets = self.config.num_buckets
        if world_size % buckets:
            raise ValueError(f"the bucket stage needs a multiple of num_buckets={buckets} tasks, got {world_size}")
        workers = world_size // buckets
        bucket, worker = divmod(rank, workers)
        files = sorted((self.input_folder / f"bucket_{bucket:03d}").glob(f"*{SIGNATURE_SUFFIX}"))
        with self.track_time():
            signatures = [self._signatures(path) for path in files]
            low, high = self.hash_range(signatures[0] if signatures else None, worker, workers)
            parts, file_ids = [], []
            for file_id, rows in enumerate(signatures):
                first = rows["sig"][:, 0]
                start, stop = np.searchsorted(first, low, side="left"), np.searchsorted(first, high, side="left")
                parts.append(np.array(rows[start:stop]))
                file_ids.append(np.full(stop - start, file_id, dtype=np.uint32))
            rows = np.concatenate(parts) if parts else np.empty(0, dtype=self.row_dtype)
            file_id = np.concatenate(file_ids) if file_ids else np.empty(0, dtype=np.uint32)
            sig = rows["sig"]
            order = np.lexsort((rows["doc"], file_id, *(sig[:, i] for i in reversed(range(sig.shape[1])))))
            sig, doc, file_id = sig[order], rows["doc"][order], file_id[order]
            same = np.flatnonzero(np.all(sig[1:] == sig[:-1], axis=1))  # row same + 1 equals row same
            stems = np.array([int(path.name.removesuffix(SIGNATURE_SUFFIX)) for path in files], dtype=np.uint32)
            pairs = np.empty((len(same), 4), dtype="<u4")
            pairs[:, 0], pairs[:, 1] = stems[file_id[same]], doc[same]
            pairs[:, 2], pairs[:, 3] = stems[file_id[same + 1]], doc[same + 1]
        self.output_folder.mkdir(parents=True, exist_ok=True)
        out = self.output_folder / f"{bucket:05d}_{worker:02d}.dups"
        write_bytes_atomic(out, pairs.tobytes())
        logger.info(f"bucket {bucket} worker {worker + 1}/{workers}: {len(rows)} signatures, {len(pairs)} pairs")
        self.stat_update("total_matches", value=len(pairs))
        return
        yield
