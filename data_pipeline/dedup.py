"""Deduplication across all sources: exact documents, near-duplicates (MinHash LSH), repeated paragraphs.

Exact and paragraph dedup share one mechanism, in three steps like datatrove's own dedup:
  1. `HashSignatures` (one task per input shard): hash each document (exact) or each paragraph
     (paragraph) after normalization, write the hashes sorted, split into buckets by hash.
  2. `FindHashDuplicates` (one task per bucket): merge a bucket's hashes from all shards; in each
     group of equal hashes the *keeper* is the occurrence in the longest document (then the first in
     corpus order); every other document's occurrence is marked for removal.
  3. `HashDedupFilter` (one task per input shard, same order as step 1): apply the removals and write
     one audit row per removed document naming the kept document it duplicated.
Near-duplicates use datatrove's four MinHash stages; `MinhashAudit` turns their cluster ids into the
same audit rows. `write_audit` merges all rows into one file.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

WORD_RE = re.compile(r"\w+")
PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")

SIGNATURE_DTYPE = np.dtype(
    [("hash", "<u8"), ("neg_len", "<i8"), ("rank", "<u4"), ("doc", "<u4"), ("part", "<u4")]
)
REMOVAL_DTYPE = np.dtype([("doc", "<u4"), ("part", "<u4"), ("keep_rank", "<u4"), ("keep_doc", "<u4")])

EXACT, PARAGRAPH = "exact", "paragraph"


def normalize_for_hash(text: str) -> str:
    """Lower-cased words joined by single spaces: the same text with other line wrapping, other
    punctuation ('--' vs an em dash) or other quotes hashes the same."""
    return " ".join(WORD_RE.findall(text.lower()))


def hash_text(normalized: str) -> int:
    return xxhash.xxh3_64_intdigest(normalized.encode("utf-8", "surrogatepass"))


def split_paragraphs(text: str) -> list[str]:
    return PARAGRAPH_BREAK_RE.split(text)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _atomic_write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


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

    def ids_path(self, rank: int) -> Path:
        return self.work / "ids" / f"{rank:05d}.jsonl"

    def signature_path(self, bucket: int, rank: int) -> Path:
        return self.work / "signatures" / f"{bucket:03d}" / f"{rank:05d}.npy"

    def removal_path(self, bucket: int, rank: int) -> Path:
        return self.work / "removals" / f"{bucket:03d}" / f"{rank:05d}.npy"

    def audit_path(self, rank: int) -> Path:
        return self.work / "audit" / f"{rank:05d}.jsonl"


class HashSignatures(_HashDedupStep):
    name = "hash signatures"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        ids: list[str] = []
        rows: list[tuple[int, int, int, int, int]] = []
        for doc_idx, doc in enumerate(data or ()):
            with self.track_time():
                ids.append(json.dumps([doc.id, doc.metadata.get("source", "")], ensure_ascii=False))
                for part, h in self.part_hashes(doc.text):
                    rows.append((h, -len(doc.text), rank, doc_idx, part))
            self.stat_update("documents")
        signatures = np.array(rows, dtype=SIGNATURE_DTYPE)
        signatures.sort(order=["hash", "neg_len", "rank", "doc", "part"])
        buckets = signatures["hash"] % self.num_buckets
        for bucket in range(self.num_buckets):
            _atomic_save(self.signature_path(bucket, rank), signatures[buckets == bucket])
        _atomic_write_lines(self.ids_path(rank), ids)
        self.stat_update("hashes", value=len(signatures))
        return
        yield  # a terminal step: it writes signatures and passes no documents on


class FindHashDuplicates(_HashDedupStep):
    name = "find hash duplicates"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        bucket = rank
        files = sorted((self.work / "signatures" / f"{bucket:03d}").glob("*.npy"))
        with self.track_time("bucket"):
            sigs = np.concatenate([np.load(f) for f in files]) if files else np.empty(0, SIGNATURE_DTYPE)
            sigs.sort(order=["hash", "neg_len", "rank", "doc", "part"])
            starts = np.ones(len(sigs), dtype=bool)
            starts[1:] = sigs["hash"][1:] != sigs["hash"][:-1]
            keeper = np.flatnonzero(starts)[np.cumsum(starts) - 1]
            remove = (sigs["rank"] != sigs["rank"][keeper]) | (sigs["doc"] != sigs["doc"][keeper])
        removed = sigs[remove]
        removals = np.empty(len(removed), dtype=REMOVAL_DTYPE)
        removals["doc"], removals["part"] = removed["doc"], removed["part"]
        removals["keep_rank"], removals["keep_doc"] = sigs["rank"][keeper][remove], sigs["doc"][keeper][remove]
        for shard_rank in sorted({int(f.stem) for f in files}):
            mine = removals[removed["rank"] == shard_rank]
            mine.sort(order=["doc", "part"])
            _atomic_save(self.removal_path(bucket, shard_rank), mine)
        group = np.cumsum(starts) - 1
        self.stat_update("duplicate_groups", value=len(np.unique(group[remove])))
        self.stat_update("removed_parts", value=int(remove.sum()))
        return
        yield


class HashDedupFilter(_HashDedupStep):
    name = "hash dedup filter"

    def __init__(self, work_folder: str, mode: str, num_buckets: int, min_part_chars: int = 0, min_doc_chars_after: int = 0):
        super().__init__(work_folder, mode, num_buckets, min_part_chars)
        self.min_doc_chars_after = min_doc_chars_after

    def _load_removals(self, rank: int) -> dict[int, list[tuple[int, int, int]]]:
        by_doc: dict[int, list[tuple[int, int, int]]] = {}
        for bucket in range(self.num_buckets):
            path = self.removal_path(bucket, rank)
            if not path.exists():
                continue
            for doc, part, keep_rank, keep_doc in np.load(path).tolist():
                by_doc.setdefault(doc, []).append((part, keep_rank, keep_doc))
        return by_doc

    def _kept_id(self, keep_rank: int, keep_doc: int, cache: dict[int, list[str]]) -> str:
        if keep_rank not in cache:
            with open(self.ids_path(keep_rank), encoding="utf-8") as fh:
                cache[keep_rank] = [json.loads(line)[0] for line in fh]
        return cache[keep_rank][keep_doc]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        removals = self._load_removals(rank)
        id_cache: dict[int, list[str]] = {}
        audit_rows: list[str] = []
        for doc_idx, doc in enumerate(data):
            hits = removals.get(doc_idx)
            if not hits:
                self.stat_update("forwarded")
                yield doc
                continue
            with self.track_time():
                keepers = Counter((r, d) for _, r, d in hits)
                (keep_rank, keep_doc), _ = keepers.most_common(1)[0]
                row = {
                    "removed": doc.id,
                    "source": doc.metadata.get("source", ""),
                    "kept": self._kept_id(keep_rank, keep_doc, id_cache),
                    "reason": self.mode,
                }
                if self.mode == PARAGRAPH:
                    dropped_parts = {part for part, _, _ in hits}
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
                    row["also_in"] = sorted({self._kept_id(r, d, id_cache) for r, d in keepers} - {row["kept"]})
            self.stat_update("dropped")
            audit_rows.append(json.dumps(row, ensure_ascii=False))
        _atomic_write_lines(self.audit_path(rank), audit_rows)


class MinhashAudit:
    """Collects what MinHash stage 4 decides, to name the kept document of every removed one.

    `removed_writer()` is handed to `MinhashDedupFilter(exclusion_writer=...)`; `KeeperLog` goes right
    after that filter and records the surviving member of each cluster. `rows()` joins the two.
    """

    def __init__(self, work_folder: str):
        self.work = Path(work_folder)

    def removed_writer(self) -> "_RemovedClusterMembers":
        return _RemovedClusterMembers(self.work / "removed")

    def keeper_log(self) -> "KeeperLog":
        return KeeperLog(self.work / "keepers")

    def rows(self) -> list[dict]:
        keepers = {}
        for path in sorted((self.work / "keepers").glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                cluster, doc_id = json.loads(line)
                keepers[cluster] = doc_id
        rows = []
        for path in sorted((self.work / "removed").glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                cluster, doc_id, source = json.loads(line)
                rows.append({"removed": doc_id, "source": source, "kept": keepers.get(cluster), "reason": "near", "cluster": cluster})
        return rows


class _RemovedClusterMembers:
    """The small part of datatrove's DiskWriter interface that MinhashDedupFilter uses."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lines: dict[int, list[str]] = {}

    def __enter__(self):
        self._lines = {}
        return self

    def write(self, doc: Document, rank: int = 0, **_) -> None:
        row = [doc.metadata.get("minhash_cluster_id", -1), doc.id, doc.metadata.get("source", "")]
        self._lines.setdefault(rank, []).append(json.dumps(row, ensure_ascii=False))

    def __exit__(self, *exc) -> None:
        for rank, lines in self._lines.items():
            _atomic_write_lines(self.folder / f"{rank:05d}.jsonl", lines)


class KeeperLog(PipelineStep):
    name = "minhash keepers"
    type = "🫂 - DEDUP"

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        lines = []
        for doc in data:
            cluster = doc.metadata.pop("minhash_cluster_id", -1)
            if cluster != -1:
                lines.append(json.dumps([cluster, doc.id], ensure_ascii=False))
                self.stat_update("clusters_kept")
            yield doc
        _atomic_write_lines(self.folder / f"{rank:05d}.jsonl", lines)


def write_audit(out_path: str | os.PathLike, *row_sets: list[dict]) -> int:
    """Merge audit rows of all dedup kinds into one JSON Lines file, sorted for byte-stable output."""
    rows = sorted((row for rows in row_sets for row in rows), key=lambda r: (r["reason"], r["removed"]))
    _atomic_write_lines(Path(out_path), [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows])
    return len(rows)


def read_audit_rows(work_folder: str | os.PathLike) -> list[dict]:
    rows = []
    for path in sorted(Path(work_folder).glob("audit/*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return rows
