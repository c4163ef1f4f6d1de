"""Deduplication across all sources: exact documents, near-duplicates (MinHash LSH), repeated paragraphs.

Exact and paragraph dedup share one mechanism, in three steps like datatrove's own dedup:
  1. `HashSignatures` (one task per input shard): hash each document (exact) or each paragraph
     (paragraph) after normalization, write the hashes sorted, split into buckets by hash, each row
     with the id of its document beside it.
  2. `FindHashDuplicates` (one task per bucket): merge a bucket's sorted files of all shards a block at a
     time; in each group of equal hashes the *keeper* is the occurrence in the longest document (then
     the first in corpus order); every other document's occurrence is marked for removal, together with
     the keeper's document index and id.
  3. `HashDedupFilter` (one task per input shard, same order as step 1): apply the removals and write
     one audit row per removed document naming the kept document it duplicated. It reads only its own
     shard's removal files.
Near-duplicates use datatrove's MinHash signature, bucket and filter stages with our numpy clusters
(`fast/minhash_clusters.py`, the same files as datatrove's); `MinhashAudit` has the removed and the kept
members of every cluster written partitioned by cluster id, and its join step turns one partition of
all shards into audit rows.

Every task that writes audit rows or decides duplicate groups leaves `<work>/audit/<name>.summary.json`
(`rows`, `duplicate_groups`, `sample`, the start of each sampled document's text in `sample_texts`,
`rows_by_source`, and `cluster_sizes`: how many groups it decided of each size, the kept member
included); audit rows go to `<work>/audit/<rank>.jsonl.gz`. `dedup_summary` reads only the summaries,
`iter_audit_rows` streams the rows.

Files (little-endian records; `.ids` / `.kept_ids` are UTF-8 bytes, one id per record, of the length in
the record's `id_len` / `kept_id_len`):
  signatures/<bucket>/<rank>.bin + .ids       SIGNATURE_DTYPE rows sorted by SORT_FIELDS
  removals/<bucket>/<rank>.bin + .kept_ids    REMOVAL_DTYPE rows in hash order
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_pipeline.removed_sample import text_start
from shard_format.atomic import AtomicFile, publish_staged, write_bytes_atomic, write_text_atomic

WORD_RE = re.compile(r"\w+")
PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")

SORT_FIELDS = ("hash", "neg_len", "rank", "doc", "part")
SIGNATURE_DTYPE = np.dtype(
    [("hash", "<u8"), ("neg_len", "<i8"), ("rank", "<u4"), ("doc", "<u4"), ("part", "<u4"), ("id_len", "<u4")]
)
REMOVAL_DTYPE = np.dtype(
    [("doc", "<u4"), ("part", "<u4"), ("keep_rank", "<u4"), ("keep_doc", "<u4"), ("kept_id_len", "<u4")]
)

EXACT, NEAR, PARAGRAPH = "exact", "near", "paragraph"
DEDUP_KINDS = (EXACT, NEAR, PARAGRAPH)
# where each kind works, under <output>/work
DEDUP_WORK_FOLDERS = {EXACT: "exact", NEAR: "minhash", PARAGRAPH: "paragraph"}

# signature rows the blocks of all shards of a find task hold together (a block is this / shards, at least
# MIN_BLOCK_ROWS); with their ids, the chunk being decided and the removals not yet written, a find task
# peaks at some 500 bytes per buffered row (~150 MB), whatever the size of its bucket
MERGE_BUFFER_ROWS = 1 << 18
MIN_BLOCK_ROWS = 256
# pieces `_gather_pieces` copies at a time
GATHER_BATCH = 1 << 15
# audit rows of smallest `removed` id each task keeps in its summary
SUMMARY_SAMPLE_ROWS = 20


def normalize_for_hash(text: str) -> str:
    """Lower-cased words joined by single spaces: the same text with other line wrapping, other
    punctuation ('--' vs an em dash) or other quotes hashes the same."""
    return " ".join(WORD_RE.findall(text.lower()))


def hash_text(normalized: str) -> int:
    return xxhash.xxh3_64_intdigest(normalized.encode("utf-8", "surrogatepass"))


def split_paragraphs(text: str) -> list[str]:
    return PARAGRAPH_BREAK_RE.split(text)


def dedup_work_folder(output_root: str | os.PathLike, kind: str) -> Path:
    return Path(output_root) / "work" / DEDUP_WORK_FOLDERS[kind]


def _encode_id(doc_id: str) -> bytes:
    return doc_id.encode("utf-8", "surrogatepass")


def _decode_id(blob: np.ndarray, start: int, length: int) -> str:
    return blob[start : start + length].tobytes().decode("utf-8", "surrogatepass")


def _exclusive_cumsum(lengths: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive pieces of these lengths."""
    out = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(np.asarray(lengths[:-1], dtype=np.int64), out=out[1:])
    return out


def _gather_pieces(blob: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The pieces blob[starts[i] : starts[i] + lengths[i]], concatenated in this order. The byte index is
    built GATHER_BATCH pieces at a time: it takes 8 bytes per byte gathered."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    out_starts = _exclusive_cumsum(lengths)
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for a in range(0, len(lengths), GATHER_BATCH):
        batch = lengths[a : a + GATHER_BATCH]
        size = int(batch.sum())
        if size:
            first = int(out_starts[a])
            shift = np.repeat(starts[a : a + GATHER_BATCH] - (out_starts[a : a + GATHER_BATCH] - first), batch)
            out[first : first + size] = blob[np.arange(size, dtype=np.int64) + shift]
    return out


def _write_json(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=1) + "\n")


def _read_records(path: Path, dtype: np.dtype, start: int = 0, count: int = -1) -> np.ndarray:
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {dtype.itemsize}-byte records (a truncated file?)")
    with open(path, "rb") as fh:
        records = np.fromfile(fh, dtype=dtype, count=count, offset=start * dtype.itemsize)
    if count >= 0 and len(records) != count:
        raise ValueError(f"{path}: expected {count} records from record {start}, found {len(records)}")
    return records


def _read_bytes(path: Path, start: int = 0, count: int = -1) -> np.ndarray:
    with open(path, "rb") as fh:
        data = np.fromfile(fh, dtype=np.uint8, count=count, offset=start)
    if count >= 0 and len(data) != count:
        raise ValueError(f"{path}: expected {count} bytes from byte {start}, found {len(data)}")
    return data


# --- audit files ---------------------------------------------------------------------------------------------


def _sample_key(row: dict) -> tuple[str, str]:
    return str(row["removed"]), json.dumps(row, ensure_ascii=False, sort_keys=True)


def write_task_summary(folder: Path, name: str, rows: int, duplicate_groups: int, sample: list[dict],
                       sample_texts: dict[str, str] | None = None, rows_by_source: Counter | None = None,
                       cluster_sizes: Counter | None = None) -> None:
    _write_json(Path(folder) / f"{name}.summary.json", {
        "rows": rows, "duplicate_groups": duplicate_groups, "sample": sample, "sample_texts": sample_texts or {},
        "rows_by_source": dict(sorted((rows_by_source or {}).items())),
        "cluster_sizes": {str(size): n for size, n in sorted((cluster_sizes or {}).items())}})


def count_sizes(distribution: Counter, sizes: np.ndarray) -> None:
    """Add groups of these sizes to a {size: groups} distribution (one entry per distinct size)."""
    values, counts = np.unique(np.asarray(sizes, dtype=np.int64), return_counts=True)
    for size, n in zip(values.tolist(), counts.tolist()):
        distribution[size] += n


class AuditWriter:
    """One task's audit rows, streamed to `<folder>/<name>.jsonl.gz` (byte-stable: no name or time in the
    gzip header), and its summary: the rows written (per source too), the duplicate groups it decided (set
    `duplicate_groups` and `cluster_sizes` before closing) and the SUMMARY_SAMPLE_ROWS rows of smallest
    `removed` id, with the start of the text of those whose text was given."""

    def __init__(self, folder: Path, name: str):
        self.path = Path(folder) / f"{name}.jsonl.gz"
        self.folder, self.name = Path(folder), name
        self.rows = 0
        self.duplicate_groups = 0
        self.cluster_sizes: Counter = Counter()
        self._rows_by_source: Counter = Counter()
        self._sample: list[dict] = []
        self._texts: dict[str, str] = {}

    def __enter__(self) -> "AuditWriter":
        self._file = AtomicFile(self.path)
        self._text = io.TextIOWrapper(gzip.GzipFile(filename="", mode="wb", fileobj=self._file.file, mtime=0),
                                      encoding="utf-8")
        return self

    def write(self, row: dict, text: str | None = None) -> None:
        """One audit row; `text`: the removed document's text (only its start is kept, for the sample)."""
        self._text.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows += 1
        self._rows_by_source[row["source"]] += 1
        self._sample.append(row)
        if text is not None:
            self._texts[str(row["removed"])] = text_start(text)
        if len(self._sample) >= 2 * SUMMARY_SAMPLE_ROWS:
            self._trim_sample()

    def _trim_sample(self) -> None:
        self._sample = sorted(self._sample, key=_sample_key)[:SUMMARY_SAMPLE_ROWS]
        sampled = {str(row["removed"]) for row in self._sample}
        self._texts = {doc_id: text for doc_id, text in self._texts.items() if doc_id in sampled}

    def __exit__(self, exc_type, *_) -> None:
        self._text.close()  # the gzip trailer; the file under it stays open
        if exc_type is not None:
            self._file.discard()
            return
        self._file.publish()
        self._trim_sample()
        write_task_summary(self.folder, self.name, self.rows, self.duplicate_groups, self._sample, self._texts,
                           self._rows_by_source, self.cluster_sizes)


def _audit_folder(output_root: Path, kind: str) -> Path:
    if kind not in DEDUP_KINDS:
        raise ValueError(f"dedup kind must be one of {DEDUP_KINDS}, not {kind!r}")
    return dedup_work_folder(output_root, kind) / "audit"


def dedup_summary(output_root: Path, sample_size: int = 20) -> dict[str, dict]:
    """Per dedup kind: documents removed (in all and per source), duplicate groups and how many of each
    size, a sample of audit rows (those of smallest `removed` id; each task keeps SUMMARY_SAMPLE_ROWS, so at
    most that many per task beyond it) with the start of their texts, and the audit files (relative to
    output_root). Reads only the per-task summaries; a disabled kind has zeros."""
    root = Path(output_root)
    out = {}
    for kind in DEDUP_KINDS:
        folder = _audit_folder(root, kind)
        removed = groups = 0
        sample: list[dict] = []
        texts: dict[str, str] = {}
        by_source: Counter = Counter()
        sizes: Counter = Counter()
        for path in sorted(folder.glob("*.summary.json")):
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
                removed += summary["rows"]
                groups += summary["duplicate_groups"]
                sample += summary["sample"]
                texts.update(summary["sample_texts"])
                by_source.update(summary["rows_by_source"])
                sizes.update({int(size): n for size, n in summary["cluster_sizes"].items()})
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: not a dedup task summary ({exc})") from exc
        sample = sorted(sample, key=_sample_key)[:sample_size]
        out[kind] = {
            "documents_removed": removed,
            "documents_removed_by_source": dict(sorted(by_source.items())),
            "duplicate_groups": groups,
            "cluster_sizes": {str(size): n for size, n in sorted(sizes.items())},
            "sample": sample,
            "sample_texts": {str(r["removed"]): texts[str(r["removed"])] for r in sample if str(r["removed"]) in texts},
            "audit_files": sorted(str(p.relative_to(root)) for p in folder.glob("*.jsonl.gz")),
        }
    return out


def iter_audit_rows(output_root: Path, kind: str) -> Iterator[dict]:
    """The audit rows of one dedup kind, task by task in rank order."""
    for path in sorted(_audit_folder(Path(output_root), kind).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line_no}: not a JSON audit row ({exc})") from exc


# --- exact and paragraph dedup -------------------------------------------------------------------------------


class _HashDedupStep(PipelineStep):
    type = "🫂 - DEDUP"

    def __init__(self, work_folder: str, mode: str, num_buckets: int, min_part_chars: int = 0):
        super().__init__()
        if mode not in (EXACT, PARAGRAPH):
            raise ValueError(f"hash dedup mode must be {EXACT!r} or {PARAGRAPH!r}, not {mode!r}")
        self.work = Path(work_folder)
        self.mode = mode
        self.num_buckets = num_buckets
        self.min_part_chars = min_part_chars

    def part_hashes(self, text: str) -> list[tuple[int, int]]:
        """(part index, hash) of the parts of a document that take part in dedup."""
        if self.mode == EXACT:
            return [(0, hash_text(normalize_for_hash(text)))]
        out = []
        for i, paragraph in enumerate(split_paragraphs(text)):
            normalized = normalize_for_hash(paragraph)
            if len(normalized) >= self.min_part_chars:
                out.append((i, hash_text(normalized)))
        return out

    def signature_folder(self, bucket: int) -> Path:
        return self.work / "signatures" / f"{bucket:05d}"

    def signature_path(self, bucket: int, rank: int) -> Path:
        """SIGNATURE_DTYPE rows; their document ids in the same order in `.ids` beside it."""
        return self.signature_folder(bucket) / f"{rank:05d}.bin"

    def removal_path(self, bucket: int, rank: int) -> Path:
        """REMOVAL_DTYPE rows; their keepers' ids in the same order in `.kept_ids` beside it."""
        return self.work / "removals" / f"{bucket:05d}" / f"{rank:05d}.bin"

    @property
    def audit_folder(self) -> Path:
        return self.work / "audit"


_ROW_BLOCK = 1 << 16  # signature rows gathered as Python tuples before they go into a numpy block


class HashSignatures(_HashDedupStep):
    name = "hash signatures"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # rows go into numpy a block at a time and ids into one byte buffer: no Python object per document
        id_blob, id_lens = bytearray(), array("q")
        blocks: list[np.ndarray] = []
        rows: list[tuple[int, int, int, int, int, int]] = []
        for doc_idx, doc in enumerate(data or ()):
            with self.track_time():
                doc_id = _encode_id(doc.id)
                id_blob += doc_id
                id_lens.append(len(doc_id))
                for part, h in self.part_hashes(doc.text):
                    rows.append((h, -len(doc.text), rank, doc_idx, part, len(doc_id)))
                if len(rows) >= _ROW_BLOCK:
                    blocks.append(np.array(rows, dtype=SIGNATURE_DTYPE))
                    rows = []
            self.stat_update("documents")
        blocks.append(np.array(rows, dtype=SIGNATURE_DTYPE))
        signatures = np.concatenate(blocks)
        del blocks, rows
        signatures.sort(order=list(SORT_FIELDS))
        id_blob = np.frombuffer(id_blob, dtype=np.uint8)
        id_starts = _exclusive_cumsum(np.frombuffer(id_lens, dtype=np.int64))
        buckets = signatures["hash"] % self.num_buckets
        for bucket in range(self.num_buckets):
            mine = signatures[buckets == bucket]
            path = self.signature_path(bucket, rank)
            write_bytes_atomic(path.with_suffix(".ids"), _gather_pieces(id_blob, id_starts[mine["doc"]], mine["id_len"]))
            write_bytes_atomic(path, mine)
        self.stat_update("hashes", value=len(signatures))
        return
        yield  # a terminal step: it writes signatures and passes no documents on


class _SortedRun:
    """One shard's sorted signatures of a bucket and their document ids, read a block at a time."""

    def __init__(self, path: Path, block_rows: int):
        self.path, self.ids_path = path, path.with_suffix(".ids")
        self.block_rows = block_rows
        size = path.stat().st_size
        if size % SIGNATURE_DTYPE.itemsize:
            raise ValueError(f"{path}: {size} bytes is not a whole number of signature rows (a truncated file?)")
        self.on_disk = size // SIGNATURE_DTYPE.itemsize
        self.rows_read = self.bytes_read = 0
        self.rows = np.empty(0, dtype=SIGNATURE_DTYPE)
        self.ids = np.empty(0, dtype=np.uint8)

    @property
    def more_on_disk(self) -> bool:
        return self.rows_read < self.on_disk

    def top_up(self) -> None:
        """Read the next block once less than half a block is buffered."""
        if not self.more_on_disk or len(self.rows) >= max(1, self.block_rows // 2):
            return
        count = min(self.block_rows, self.on_disk - self.rows_read)
        block = _read_records(self.path, SIGNATURE_DTYPE, self.rows_read, count)
        id_bytes = int(block["id_len"].sum(dtype=np.int64))
        ids = _read_bytes(self.ids_path, self.bytes_read, id_bytes)
        self.rows_read += count
        self.bytes_read += id_bytes
        self.rows = np.concatenate([self.rows, block])
        self.ids = np.concatenate([self.ids, ids])

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n buffered rows and their ids, removed from the buffer."""
        cut = int(self.rows["id_len"][:n].sum(dtype=np.int64))
        rows, ids = self.rows[:n], self.ids[:cut]
        self.rows, self.ids = self.rows[n:], self.ids[cut:]
        return rows, ids


def _rows_up_to(rows: np.ndarray, key: tuple) -> int:
    """How many rows of a sorted signature block sort at or before `key` (a value per SORT_FIELDS)."""
    lo, hi = 0, len(rows)
    for field, value in zip(SORT_FIELDS, key):
        column = rows[field][lo:hi]
        lo, hi = lo + int(np.searchsorted(column, value, "left")), lo + int(np.searchsorted(column, value, "right"))
        if lo == hi:
            return lo
    return hi


def merge_sorted_runs(runs: list[_SortedRun]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Merge sorted runs into sorted chunks (rows, id start of each row in ids, ids), holding at most 1.5
    blocks of each run. A chunk ends at the smallest last buffered key of the runs with more on disk:
    nothing still on disk sorts before it, and the run it came from is emptied, so every chunk makes room."""
    while True:
        for run in runs:
            run.top_up()
        live = [run for run in runs if len(run.rows)]
        if not live:
            return
        bounds = [tuple(run.rows[-1][f] for f in SORT_FIELDS) for run in live if run.more_on_disk]
        frontier = min(bounds) if bounds else None
        taken = [run.take(len(run.rows) if frontier is None else _rows_up_to(run.rows, frontier)) for run in live]
        rows = np.concatenate([r for r, _ in taken])
        ids = np.concatenate([i for _, i in taken])
        id_starts = _exclusive_cumsum(rows["id_len"].astype(np.int64))
        order = np.lexsort(tuple(rows[f] for f in reversed(SORT_FIELDS)))
        yield rows[order], id_starts[order], ids


class _KeeperDecisions:
    """The keeper of each group of equal hashes in a stream of sorted chunks. A group may go on in the next
    chunk: the keeper of a chunk's last group is put first in the next one (it sorts before the rest)."""

    def __init__(self):
        self.carried_row: np.ndarray | None = None
        self.carried_id = np.empty(0, dtype=np.uint8)
        self.carried_group_counted = False
        self.carried_removed = 0  # removals of the carried group so far
        self.groups_with_removal = 0
        self.removed_parts = 0
        self.group_sizes: Counter = Counter()  # groups with a removal, by size (the keeper included)

    def decide(self, rows: np.ndarray, id_starts: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed rows, their keepers' rows, their keepers' ids concatenated)."""
        carried = self.carried_row is not None
        if carried:
            rows = np.concatenate([self.carried_row, rows])
            id_starts = np.concatenate([[0], id_starts + len(self.carried_id)])
            ids = np.concatenate([self.carried_id, ids])
        starts = np.ones(len(rows), dtype=bool)
        starts[1:] = rows["hash"][1:] != rows["hash"][:-1]
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        keeper = first[group]
        remove = (rows["rank"] != rows["rank"][keeper]) | (rows["doc"] != rows["doc"][keeper])
        groups_hit = np.unique(group[remove])
        already_counted = carried and self.carried_group_counted and len(groups_hit) and groups_hit[0] == 0
        self.groups_with_removal += len(groups_hit) - int(bool(already_counted))
        self.removed_parts += int(remove.sum())

        last = int(group[-1])
        removed_per_group = np.bincount(group[remove], minlength=last + 1)
        if carried:
            removed_per_group[0] += self.carried_removed
        done = removed_per_group[:-1]  # every group but the last is complete
        count_sizes(self.group_sizes, done[done > 0] + 1)
        self.carried_removed = int(removed_per_group[-1])
        self.carried_group_counted = bool(len(groups_hit) and groups_hit[-1] == last) or \
            bool(carried and last == 0 and self.carried_group_counted)
        k = int(first[last])
        self.carried_row = rows[k : k + 1].copy()
        self.carried_id = ids[id_starts[k] : id_starts[k] + int(rows["id_len"][k])].copy()

        keepers = keeper[remove]
        kept_ids = _gather_pieces(ids, id_starts[keepers], rows["id_len"][keepers])
        return rows[remove], rows[keepers], kept_ids

    def finish(self) -> None:
        """Count the size of the last group, which no later chunk continues."""
        if self.carried_removed:
            count_sizes(self.group_sizes, np.array([self.carried_removed + 1]))
        self.carried_removed = 0


class _RemovalFiles:
    """A bucket's removals, one pair of files per shard, appended a batch at a time (in hash order) and
    moved into place when the bucket is done."""

    def __init__(self, step: _HashDedupStep, bucket: int, ranks: list[int], flush_rows: int):
        self.step, self.bucket, self.ranks, self.flush_rows = step, bucket, set(ranks), flush_rows
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._started: set[int] = set()

    def _tmp_paths(self, rank: int) -> tuple[Path, Path]:
        path = self.step.removal_path(self.bucket, rank)
        return path.with_name(path.name + ".tmp"), path.with_name(path.stem + ".kept_ids.tmp")

    def add(self, removed: np.ndarray, keepers: np.ndarray, kept_ids: np.ndarray) -> None:
        records = np.empty(len(removed), dtype=REMOVAL_DTYPE)
        records["doc"], records["part"] = removed["doc"], removed["part"]
        records["keep_rank"], records["keep_doc"] = keepers["rank"], keepers["doc"]
        records["kept_id_len"] = keepers["id_len"]
        self._pending.append((removed["rank"], records, kept_ids))
        self._pending_rows += len(records)
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        ranks = np.concatenate([r for r, _, _ in self._pending])
        records = np.concatenate([rec for _, rec, _ in self._pending])
        kept_ids = np.concatenate([k for _, _, k in self._pending])
        self._pending, self._pending_rows = [], 0
        order = np.argsort(ranks, kind="stable")
        kept_ids = _gather_pieces(kept_ids, _exclusive_cumsum(records["kept_id_len"].astype(np.int64))[order],
                                  records["kept_id_len"][order])
        records, ranks = records[order], ranks[order]
        byte_offsets = np.concatenate([[0], np.cumsum(records["kept_id_len"], dtype=np.int64)])
        rank_values, firsts = np.unique(ranks, return_index=True)
        ends = np.append(firsts[1:], len(records))
        for rank, a, b in zip(rank_values.tolist(), firsts.tolist(), ends.tolist()):
            records_tmp, kept_tmp = self._tmp_paths(rank)
            mode = "ab" if rank in self._started else "wb"
            records_tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(records_tmp, mode) as fh:
                fh.write(records[a:b].tobytes())
            with open(kept_tmp, mode) as fh:
                fh.write(kept_ids[byte_offsets[a] : byte_offsets[b]].tobytes())
            self._started.add(rank)
        self.ranks |= set(rank_values.tolist())

    def close(self) -> None:
        self._flush()
        for rank in sorted(self.ranks):
            records_tmp, kept_tmp = self._tmp_paths(rank)
            if rank not in self._started:
                records_tmp.parent.mkdir(parents=True, exist_ok=True)
                records_tmp.write_bytes(b"")
                kept_tmp.write_bytes(b"")
            path = self.step.removal_path(self.bucket, rank)
            publish_staged(kept_tmp, path.with_suffix(".kept_ids"))
            publish_staged(records_tmp, path)


class FindHashDuplicates(_HashDedupStep):
    name = "find hash duplicates"

    def __init__(self, work_folder: str, mode: str, num_buckets: int, block_rows: int | None = None):
        super().__init__(work_folder, mode, num_buckets)
        self.block_rows = block_rows

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        bucket = rank
        paths = sorted(self.signature_folder(bucket).glob("*.bin"))
        block_rows = self.block_rows or max(MIN_BLOCK_ROWS, MERGE_BUFFER_ROWS // max(1, len(paths)))
        runs = [_SortedRun(path, block_rows) for path in paths]
        removals = _RemovalFiles(self, bucket, [int(p.stem) for p in paths], flush_rows=block_rows * max(1, len(paths)))
        decisions = _KeeperDecisions()
        with self.track_time("bucket"):
            for rows, id_starts, ids in merge_sorted_runs(runs):
                removed, keepers, kept_ids = decisions.decide(rows, id_starts, ids)
                if len(removed):
                    removals.add(removed, keepers, kept_ids)
            removals.close()
            decisions.finish()
        write_task_summary(self.audit_folder, f"find_{bucket:05d}", rows=0,
                           duplicate_groups=decisions.groups_with_removal, sample=[],
                           cluster_sizes=decisions.group_sizes)
        self.stat_update("duplicate_groups", value=decisions.groups_with_removal)
        self.stat_update("removed_parts", value=decisions.removed_parts)
        return
        yield


class HashDedupFilter(_HashDedupStep):
    name = "hash dedup filter"

    def __init__(self, work_folder: str, mode: str, num_buckets: int, min_part_chars: int = 0, min_doc_chars_after: int = 0):
        super().__init__(work_folder, mode, num_buckets, min_part_chars)
        self.min_doc_chars_after = min_doc_chars_after

    def _load_removals(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This shard's removals of every bucket sorted by (doc, part), the start of each one's keeper id in
        the id bytes, and the id bytes."""
        records, kept_ids = [], []
        for bucket in range(self.num_buckets):
            path = self.removal_path(bucket, rank)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no removals of shard {rank} from bucket {bucket}; "
                                        f"did every task of the find-duplicates stage finish?")
            records.append(_read_records(path, REMOVAL_DTYPE))
            kept_ids.append(_read_bytes(path.with_suffix(".kept_ids")))
        all_records = np.concatenate(records) if records else np.empty(0, dtype=REMOVAL_DTYPE)
        blob = np.concatenate(kept_ids) if kept_ids else np.empty(0, dtype=np.uint8)
        if int(all_records["kept_id_len"].sum(dtype=np.int64)) != len(blob):
            raise ValueError(f"{self.work / 'removals'}: the kept ids of shard {rank} do not match its removal records")
        kept_starts = _exclusive_cumsum(all_records["kept_id_len"].astype(np.int64))
        order = np.lexsort((all_records["part"], all_records["doc"]))
        return all_records[order], kept_starts[order], blob

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        records, kept_starts, blob = self._load_removals(rank)
        run_starts = np.flatnonzero(np.diff(records["doc"].astype(np.int64), prepend=-1)).tolist()
        run_ends = run_starts[1:] + [len(records)]
        run_docs = records["doc"][run_starts].tolist()
        next_run = documents = 0
        with AuditWriter(self.audit_folder, f"{rank:05d}") as audit:
            for position, doc in enumerate(data):
                documents += 1
                if next_run == len(run_docs) or run_docs[next_run] != position:
                    self.stat_update("forwarded")
                    yield doc
                    continue
                a, b = run_starts[next_run], run_ends[next_run]
                next_run += 1
                with self.track_time():
                    hits = records[a:b]
                    keepers = list(zip(hits["keep_rank"].tolist(), hits["keep_doc"].tolist()))
                    first_hit: dict[tuple[int, int], int] = {}
                    for i, keeper in enumerate(keepers):
                        first_hit.setdefault(keeper, a + i)

                    def kept_id(keeper: tuple[int, int]) -> str:
                        i = first_hit[keeper]
                        return _decode_id(blob, int(kept_starts[i]), int(records["kept_id_len"][i]))

                    # the keeper of most of the removed parts; of equally many, the one of the earliest part
                    top, _ = Counter(keepers).most_common(1)[0]
                    row = {"removed": doc.id, "source": doc.metadata.get("source", ""), "kept": kept_id(top), "reason": self.mode}
                    text_before = doc.text  # the audit sample shows the document as it came, not what is left
                    if self.mode == PARAGRAPH:
                        dropped_parts = set(hits["part"].tolist())
                        paragraphs = split_paragraphs(doc.text)
                        kept = [p for i, p in enumerate(paragraphs) if i not in dropped_parts]
                        self.stat_update("paragraphs_removed", value=len(dropped_parts))
                        doc.text = "\n\n".join(kept)
                        if len(doc.text.strip()) >= self.min_doc_chars_after:
                            self.stat_update("documents_shortened")
                            self.stat_update("forwarded")
                            yield doc
                            continue
                        row["paragraphs_removed"] = len(dropped_parts)
                        row["paragraphs_total"] = len(paragraphs)
                        row["also_in"] = sorted({kept_id(k) for k in first_hit} - {row["kept"]})
                self.stat_update("dropped")
                audit.write(row, text_before)
            if next_run != len(run_docs):
                raise ValueError(f"{self.work / 'removals'}: shard {rank} has removals for document {run_docs[next_run]} "
                                 f"but only {documents} documents; its input changed since the signatures were written")


# --- near dedup audit ----------------------------------------------------------------------------------------


def _write_partitioned_lines(folder: Path, rank: int, lines_by_part: dict[int, list[str]], parts: int) -> None:
    """`<rank>.jsonl` with the lines of part 0, then part 1, ...; `<rank>.parts.npy`: the byte offset where
    each part starts (parts + 1 offsets), so a reader of one part reads only its bytes."""
    chunks = [("".join(line + "\n" for line in lines_by_part.get(part, ()))).encode("utf-8") for part in range(parts)]
    offsets = np.zeros(parts + 1, dtype=np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    write_bytes_atomic(folder / f"{rank:05d}.jsonl", *chunks)
    index = io.BytesIO()
    np.save(index, offsets)
    write_bytes_atomic(folder / f"{rank:05d}.parts.npy", index.getvalue())


def _read_partition_lines(folder: Path, part: int) -> Iterator[tuple[Path, str]]:
    """(file, line) of one part of every shard's partitioned file, in shard order."""
    for index_path in sorted(folder.glob("*.parts.npy")):
        offsets = np.load(index_path)
        data_path = index_path.with_name(index_path.name.replace(".parts.npy", ".jsonl"))
        if part + 1 >= len(offsets):
            raise ValueError(f"{index_path}: written for {len(offsets) - 1} parts, part {part} asked for")
        start, end = int(offsets[part]), int(offsets[part + 1])
        text = _read_bytes(data_path, start, end - start).tobytes().decode("utf-8")
        yield from ((data_path, line) for line in text.splitlines())


class MinhashAudit:
    """Names the kept document of every document MinHash stage 4 removes, without one process holding
    every cluster.

    `removed_writer()` is handed to `MinhashDedupFilter(exclusion_writer=...)`; `keeper_log()` goes right
    after that filter and records the surviving member of each cluster. Both write their rows partitioned
    by cluster id into `parts` parts; `join_step()` (a stage of `parts` tasks) joins part p of every shard.
    """

    def __init__(self, work_folder: str, parts: int):
        if parts < 1:
            raise ValueError(f"the near dedup audit needs at least one part, not {parts}")
        self.work = Path(work_folder)
        self.parts = parts

    @property
    def removed_folder(self) -> Path:
        return self.work / "cluster_members" / "removed"

    @property
    def keepers_folder(self) -> Path:
        return self.work / "cluster_members" / "kept"

    def removed_writer(self) -> "_RemovedClusterMembers":
        return _RemovedClusterMembers(self.removed_folder, self.parts)

    def keeper_log(self) -> "KeeperLog":
        return KeeperLog(self.keepers_folder, self.parts)

    def join_step(self) -> "NearAuditJoin":
        return NearAuditJoin(self)


class _RemovedClusterMembers:
    """The small part of datatrove's DiskWriter interface that MinhashDedupFilter uses."""

    def __init__(self, folder: Path, parts: int):
        self.folder, self.parts = folder, parts
        self._lines: dict[int, dict[int, list[str]]] = {}

    def __enter__(self):
        self._lines = {}
        return self

    def write(self, doc: Document, rank: int = 0, **_) -> None:
        cluster = doc.metadata.get("minhash_cluster_id", -1)
        # the start of the text goes with the row: the audit's sample shows it
        row = [cluster, doc.id, doc.metadata.get("source", ""), text_start(doc.text)]
        self._lines.setdefault(rank, {}).setdefault(cluster % self.parts, []).append(json.dumps(row, ensure_ascii=False))

    def __exit__(self, *exc) -> None:
        for rank, by_part in self._lines.items():
            _write_partitioned_lines(self.folder, rank, by_part, self.parts)


class KeeperLog(PipelineStep):
    name = "minhash keepers"
    type = "🫂 - DEDUP"

    def __init__(self, folder: Path, parts: int):
        super().__init__()
        self.folder = Path(folder)
        self.parts = parts

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        by_part: dict[int, list[str]] = {}
        for doc in data:
            cluster = doc.metadata.pop("minhash_cluster_id", -1)
            if cluster != -1:
                by_part.setdefault(cluster % self.parts, []).append(json.dumps([cluster, doc.id], ensure_ascii=False))
                self.stat_update("clusters_kept")
            yield doc
        _write_partitioned_lines(self.folder, rank, by_part, self.parts)


class NearAuditJoin(PipelineStep):
    """Task p: the audit rows of the removed members of the clusters of part p, each naming its cluster's
    kept member. It holds the kept ids of its part's clusters only."""

    name = "near dedup audit"
    type = "🫂 - DEDUP"

    def __init__(self, audit: MinhashAudit):
        super().__init__()
        self.audit = audit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        part = rank
        kept: dict[int, str] = {}
        for path, line in _read_partition_lines(self.audit.keepers_folder, part):
            cluster, doc_id = self._parse(path, line, 2)
            kept[cluster] = doc_id
        removed_per_cluster: Counter = Counter()
        with AuditWriter(self.audit.work / "audit", f"{part:05d}") as writer:
            for path, line in _read_partition_lines(self.audit.removed_folder, part):
                cluster, doc_id, source, text = self._parse(path, line, 4)
                writer.write({"removed": doc_id, "source": source, "kept": kept.get(cluster), "reason": NEAR, "cluster": cluster},
                             text)
                removed_per_cluster[cluster] += 1
            writer.duplicate_groups = len(removed_per_cluster)
            count_sizes(writer.cluster_sizes, np.fromiter(removed_per_cluster.values(), dtype=np.int64) + 1)
        self.stat_update("rows", value=writer.rows)
        self.stat_update("clusters", value=len(removed_per_cluster))
        return
        yield

    @staticmethod
    def _parse(path: Path, line: str, fields: int) -> list:
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON cluster member row: {line[:200]!r}") from exc
        if not isinstance(row, list) or len(row) != fields:
            raise ValueError(f"{path}: expected a cluster member row of {fields} fields: {line[:200]!r}")
        return row
