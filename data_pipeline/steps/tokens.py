"""From clean documents to shards: tokenize, shuffle and shard in buckets (the tokenizer: steps/tokenizer_training.py).

Every document (a long one split into chunks first, so that every source can give validation text) gets
two seeded hashes of its id: its *order key*. The order key alone decides everything downstream, so the
shards do not depend on how many tasks made them:

- the split: val when the first hash is below `val_fraction` of its range (and, for a source of at least
  two units that drew none, its unit with the smallest key: every such source has validation text);
- the bucket: the range of the first hash is cut into `buckets` equal parts;
- the order within a bucket: ascending key, a shuffle; bucket after bucket, that is one global order.

`TokenizeDocuments` (one task per input shard) encodes its documents into one part (`<rank>.ds`) and writes
their keys sorted, so a bucket's rows are one contiguous slice. `WriteBucketShards` (one task per bucket)
merges its slice of every part and writes the bucket's shards; `WriteManifest` (one task) lists them all.
A rerun skips finished buckets. Near-duplicates were removed across all sources before the split, so no
near-duplicate of a validation document stays in train.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_pipeline.tokenizer import load_tokenizer
from shard_format import manifest as manifest_lib
from shard_format import storage
from shard_format.atomic import AtomicFile, write_text_atomic
from shard_format.shards import ShardInfo, ShardReader, ShardWriter, token_dtype_for_vocab

SPLITS = ("train", "val")
TOKENIZER_FOLDER = "tokenizer"  # in the output folder
_UNBOUNDED = 1 << 62
_KEY_RANGE = 1 << 64
# the second hash of the order key breaks ties of the first without looking at ids
_TIE_BREAK_SEED_OFFSET = 0x9E3779B97F4A7C15
# a unit's row in its part: order key, where its tokens are in the part's .ds, its source's index
KEY_DTYPE = np.dtype([("key", "<u8"), ("tie", "<u8"), ("start", "<u8"), ("length", "<u4"), ("source", "<u2")])
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def unit_hash(seed: int, unit_id: str) -> int:
    return xxhash.xxh3_64_intdigest(unit_id.encode("utf-8", "surrogatepass"), seed=seed)


def order_key(seed: int, unit_id: str) -> tuple[int, int]:
    return unit_hash(seed, unit_id), unit_hash((seed + _TIE_BREAK_SEED_OFFSET) % _KEY_RANGE, unit_id)


def val_threshold(val_fraction: float) -> int:
    """Units whose first hash is below this are validation units."""
    return int(val_fraction * _KEY_RANGE)


def bucket_starts(buckets: int) -> np.ndarray:
    """The smallest first hash of each bucket (bucket b holds [starts[b], starts[b + 1]))."""
    return np.array([-(-b * _KEY_RANGE // buckets) for b in range(buckets)], dtype=np.uint64)


def chunks(doc_id: str, text: str, chunk_chars: int) -> list[tuple[str, str]]:
    """A document as (unit id, text) units: itself, or when longer than `chunk_chars` (0: never), pieces of
    at least `chunk_chars` characters cut at the first paragraph break after that length."""
    if not chunk_chars or len(text) <= chunk_chars:
        return [(doc_id, text)]
    units, start = [], 0
    while start < len(text):
        brk = _PARAGRAPH_BREAK.search(text, start + chunk_chars)
        end, next_start = (brk.start(), brk.end()) if brk else (len(text), len(text))
        units.append((f"{doc_id}#chunk{len(units)}", text[start:end]))
        start = next_start
    return units


def _write_json(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, sort_keys=True) + "\n")


def part_paths(parts_folder: Path, rank: int) -> tuple[Path, Path, Path]:
    """A tokenize task's part: its tokens (.ds), its sorted keys, and per source its unit count and smallest key."""
    return (parts_folder / f"part{rank:05d}_00000.ds", parts_folder / f"part{rank:05d}.keys.npy",
            parts_folder / f"part{rank:05d}.summary.json")


class TokenizeDocuments(PipelineStep):
    """One task per input shard: chunk, encode (EOS appended) and key its documents into one part."""

    name = "tokenize"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_folder: str, parts_folder: str, eos_token: str, seed: int, sources: list[str],
                 chunk_chars: int = 0, batch_size: int = 512):
        super().__init__()
        self.tokenizer_folder, self.parts_folder, self.eos_token = tokenizer_folder, Path(parts_folder), eos_token
        self.seed, self.sources, self.chunk_chars, self.batch_size = seed, list(sources), chunk_chars, batch_size

    def _source_index(self, doc) -> int:
        source = doc.metadata.get("source", "default")
        try:
            return self.sources.index(source)
        except ValueError:
            raise ValueError(f"document {doc.id!r}: source {source!r} is not one of the configured sources "
                             f"{self.sources}") from None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = load_tokenizer(self.tokenizer_folder, self.eos_token)
        eos_id = tokenizer.token_to_id(self.eos_token)
        vocab_size = tokenizer.get_vocab_size()
        dtype = token_dtype_for_vocab(vocab_size)
        ds_path, keys_path, summary_path = part_paths(self.parts_folder, rank)
        key_batches: list[np.ndarray] = []  # KEY_DTYPE rows: 34 bytes a unit, no Python object per unit
        written = 0
        # tokens in arrival order first; rewritten in key order at the end, so that each bucket's units are
        # one contiguous, ordered run of the part (the shard tasks read only their run, front to back)
        writer = ShardWriter(self.parts_folder, f"arrival{rank:05d}", vocab_size, _UNBOUNDED)

        def flush(batch: list[tuple[str, str, int]]) -> None:
            nonlocal written
            texts = [text for _, text, _ in batch]
            timer = self.track_time("batch")
            with timer:
                encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            batch_keys = np.empty(len(batch), dtype=KEY_DTYPE)
            for row, ((unit_id, _, source), enc) in enumerate(zip(batch, encodings)):
                tokens = np.empty(len(enc.ids) + 1, dtype=dtype)
                tokens[:-1] = enc.ids
                tokens[-1] = eos_id
                writer.write(tokens)
                batch_keys[row] = (*order_key(self.seed, unit_id), written, len(tokens), source)
                written += len(tokens)
                self.stat_update(f"tokens/{self.sources[source]}", value=len(tokens))
                self.stat_update(f"units/{self.sources[source]}")
            key_batches.append(batch_keys)

        batch: list[tuple[str, str, int]] = []
        with writer:
            for doc in data:
                source = self._source_index(doc)
                units = chunks(doc.id, doc.text, self.chunk_chars)
                if len(units) > 1:
                    self.stat_update("documents_chunked")
                batch.extend((unit_id, text, source) for unit_id, text in units)
                if len(batch) >= self.batch_size:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
        sorted_keys = np.concatenate(key_batches) if key_batches else np.empty(0, dtype=KEY_DTYPE)
        sorted_keys.sort(order=["key", "tie"])
        with self.track_time("order"):
            self._write_in_key_order(sorted_keys, ds_path, vocab_size, written)
        summary = {}
        for i, name in enumerate(self.sources):
            mine = sorted_keys[sorted_keys["source"] == i]
            if len(mine):
                summary[name] = {"units": len(mine), "first_key": [int(mine["key"][0]), int(mine["tie"][0])]}
        with AtomicFile(keys_path) as fh:
            np.save(fh.file, sorted_keys)
        _write_json(summary_path, summary)
        return
        yield

    def _write_in_key_order(self, sorted_keys: np.ndarray, ds_path: Path, vocab_size: int, num_tokens: int) -> None:
        """Rewrite the arrival-order part as `ds_path` in the order of `sorted_keys`, whose starts it updates."""
        arrival = ds_path.with_name(ds_path.name.replace("part", "arrival", 1))
        if not len(sorted_keys):
            return
        reader = ShardReader(arrival, num_tokens=num_tokens)
        new_starts = np.zeros(len(sorted_keys), dtype=np.uint64)
        np.cumsum(sorted_keys["length"][:-1], out=new_starts[1:])
        with ShardWriter(ds_path.parent, ds_path.name.split("_")[0], vocab_size, _UNBOUNDED) as ordered:
            for start, length in zip(sorted_keys["start"].tolist(), sorted_keys["length"].tolist()):
                ordered.write(reader.tokens(start, start + length))
        sorted_keys["start"] = new_starts
        del reader
        for path in arrival.parent.glob(arrival.name + "*"):
            path.unlink()


class WriteBucketShards(PipelineStep):
    """One task per bucket: its slice of every tokenize part, split, ordered by key, written as shards
    `<split>/<source>_b<bucket>_<n>.ds`; the list of them goes to `<lists>/<bucket>.json`. An output folder
    that is a URL gets each shard's files uploaded from `staging_folder` as soon as the shard is complete."""

    name = "shard"
    type = "🔢 - TOKENIZER"

    def __init__(self, parts_folder: str, output_folder: str, lists_folder: str, tokenizer_folder: str,
                 eos_token: str, sources: list[str], buckets: int, val_fraction: float, max_tokens_per_shard: int,
                 formats: list[str], staging_folder: str | None = None, storage_options: dict | None = None):
        super().__init__()
        self.parts_folder, self.output_folder = Path(parts_folder), output_folder
        self.remote = storage.is_remote(output_folder)
        if self.remote and staging_folder is None:
            raise ValueError(f"output folder {output_folder} is a URL: the shards need a local staging folder")
        self.staging_folder = Path(staging_folder) if self.remote else None
        self.storage_options = storage_options or {}
        self.lists_folder, self.tokenizer_folder, self.eos_token = Path(lists_folder), tokenizer_folder, eos_token
        self.sources, self.buckets, self.val_fraction = list(sources), buckets, val_fraction
        self.max_tokens_per_shard, self.formats = max_tokens_per_shard, list(formats)

    def _part_ranks(self) -> list[int]:
        return sorted(int(p.name[len("part"):].split(".")[0]) for p in self.parts_folder.glob("part*.summary.json"))

    def forced_val_keys(self, ranks: list[int]) -> dict[int, tuple[int, int]]:
        """Source index -> the key of its smallest unit, for each source of two or more units none of which
        drew val: that unit becomes its validation text."""
        if self.val_fraction <= 0:
            return {}
        units: dict[str, int] = {}
        first: dict[str, tuple[int, int]] = {}
        for rank in ranks:
            summary = json.loads(part_paths(self.parts_folder, rank)[2].read_text(encoding="utf-8"))
            for source, info in summary.items():
                units[source] = units.get(source, 0) + info["units"]
                first[source] = min(first.get(source, tuple(info["first_key"])), tuple(info["first_key"]))
        threshold = val_threshold(self.val_fraction)
        return {self.sources.index(s): first[s] for s in units if units[s] >= 2 and first[s][0] >= threshold}

    def _bucket_rows(self, ranks: list[int], bucket: int, token_size: int) -> tuple[np.ndarray, np.ndarray, list[ShardReader]]:
        starts = bucket_starts(self.buckets)
        rows, owners, readers = [], [], []
        for rank in ranks:
            ds_path, keys_path, _ = part_paths(self.parts_folder, rank)
            keys = np.load(keys_path, mmap_mode="r")
            lo = np.searchsorted(keys["key"], starts[bucket], side="left")
            hi = len(keys) if bucket + 1 == self.buckets else np.searchsorted(keys["key"], starts[bucket + 1], side="left")
            if hi > lo:
                rows.append(np.array(keys[lo:hi]))
                owners.append(np.full(hi - lo, len(readers), dtype=np.uint32))
                # the rows say where each unit's tokens are: the part's index is never read
                readers.append(ShardReader(ds_path, num_tokens=ds_path.stat().st_size // token_size))
        if not rows:
            return np.empty(0, KEY_DTYPE), np.empty(0, np.uint32), readers
        rows_all, owners_all = np.concatenate(rows), np.concatenate(owners)
        order = np.lexsort((rows_all["tie"], rows_all["key"]))
        return rows_all[order], owners_all[order], readers

    def _split_folder(self, split: str, bucket: int) -> Path:
        """Where the bucket's shards of a split are written: the output, or the staging folder for a URL."""
        if self.remote:
            return self.staging_folder / f"{bucket:05d}" / split
        return Path(self.output_folder) / split

    def _remove_earlier_attempt(self, bucket: int) -> None:
        pattern = f"*_b{bucket:05d}_*"
        for split in SPLITS:
            for path in self._split_folder(split, bucket).glob(pattern):
                path.unlink()
            if self.remote:
                fs, root = storage.resolve(storage.join(self.output_folder, split), self.storage_options)
                for path in fs.glob(f"{root}/{pattern}"):
                    fs.rm_file(path)

    def _publish(self, folder: Path, shards: list[ShardInfo], split: str) -> None:
        """Upload the finished shards' files (the .ds last, as locally) and remove the local copies."""
        for shard in shards:
            for name in [*shard.extra_files, shard.path]:
                storage.upload_file(folder / name, storage.join(self.output_folder, split, name), self.storage_options)
                (folder / name).unlink()

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        bucket = rank
        tokenizer = load_tokenizer(self.tokenizer_folder, self.eos_token)
        vocab_size = tokenizer.get_vocab_size()
        self._remove_earlier_attempt(bucket)
        ranks = self._part_ranks()
        forced = self.forced_val_keys(ranks)
        with self.track_time("bucket"):
            rows, owners, readers = self._bucket_rows(ranks, bucket, token_dtype_for_vocab(vocab_size).itemsize)
        is_val = rows["key"] < np.uint64(val_threshold(self.val_fraction))
        for source, (key, tie) in forced.items():
            is_val |= (rows["source"] == source) & (rows["key"] == key) & (rows["tie"] == tie)
        listing: dict[str, dict[str, list[dict]]] = {}
        for split, in_split in (("train", ~is_val), ("val", is_val)):
            for index, source in enumerate(self.sources):
                selected = np.flatnonzero(in_split & (rows["source"] == index))
                if not len(selected):
                    continue
                folder, published = self._split_folder(split, bucket), 0
                with self.track_time("write"), ShardWriter(
                        folder, f"{source}_b{bucket:05d}", vocab_size, self.max_tokens_per_shard,
                        formats=self.formats, tokenizer_name="tokenizer/tokenizer.json") as writer:
                    for i in selected:
                        start = int(rows["start"][i])
                        writer.write(readers[owners[i]].tokens(start, start + int(rows["length"][i])))
                        if self.remote and len(writer.shards) > published:
                            self._publish(folder, writer.shards[published:], split)
                            published = len(writer.shards)
                if self.remote:
                    self._publish(folder, writer.shards[published:], split)
                listing.setdefault(split, {})[source] = [asdict(s) for s in writer.shards]
                self.stat_update(f"shards/{split}", value=len(writer.shards))
                self.stat_update(f"units/{split}/{source}", value=len(selected))
        _write_json(self.lists_folder / f"{bucket:05d}.json", listing)
        return
        yield


class WriteManifest(PipelineStep):
    """One task: the manifest, from every bucket's list of shards, in bucket order (and, for an output
    folder that is a URL, the tokenizer uploaded beside it)."""

    name = "manifest"
    type = "🔢 - TOKENIZER"

    def __init__(self, lists_folder: str, output_folder: str, tokenizer_folder: str, eos_token: str, buckets: int,
                 resolved_config: dict, storage_options: dict | None = None):
        super().__init__()
        self.lists_folder, self.output_folder = Path(lists_folder), output_folder
        self.storage_options = storage_options or {}
        self.tokenizer_folder, self.eos_token, self.buckets = tokenizer_folder, eos_token, buckets
        self.resolved_config = resolved_config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = load_tokenizer(self.tokenizer_folder, self.eos_token)
        vocab_size = tokenizer.get_vocab_size()
        splits: dict[str, dict[str, list[ShardInfo]]] = {}
        for bucket in range(self.buckets):
            path = self.lists_folder / f"{bucket:05d}.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: bucket {bucket} has no list of shards; rerun the pipeline to "
                                        f"finish its shard task")
            for split, sources in json.loads(path.read_text(encoding="utf-8")).items():
                for source, shards in sources.items():
                    splits.setdefault(split, {}).setdefault(source, []).extend(ShardInfo(**s) for s in shards)
        ordered = {split: dict(sorted(splits[split].items())) for split in SPLITS if split in splits}
        if storage.is_remote(self.output_folder):
            storage.upload_folder(self.tokenizer_folder, storage.join(self.output_folder, TOKENIZER_FOLDER),
                                  self.storage_options)
        manifest = manifest_lib.build(
            tokenizer_folder=Path(TOKENIZER_FOLDER),
            vocab_size=vocab_size,
            eos_token=self.eos_token,
            eos_id=tokenizer.token_to_id(self.eos_token),
            token_dtype=np.dtype(token_dtype_for_vocab(vocab_size)).name,
            splits=ordered,
            resolved_config=self.resolved_config,
        )
        manifest_lib.write(manifest, self.output_folder, self.storage_options)
        self.stat_update("shards", value=sum(len(s) for sources in ordered.values() for s in sources.values()))
        return
        yield
