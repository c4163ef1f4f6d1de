"""From clean documents to shards: tokenize, shuffle and shard (the tokenizer: steps/tokenizer_training.py).

`TokenizeDocuments` (one task per input shard) puts every document in train or val by a hash of
its id, encodes it, appends EOS and writes per-task parts for each (split, source). `MergeShards`
(one task) orders each (split, source)'s documents by a seeded hash of their ids, which is a
shuffle that does not depend on how many tasks there were, writes the final shards and the manifest.
Near-duplicates were removed across all sources before the split, so no near-duplicate of a
validation document stays in train.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_pipeline import manifest as manifest_lib
from data_pipeline.shards import ShardReader, ShardWriter, token_dtype_for_vocab
from data_pipeline.tokenizer import load_tokenizer

SPLITS = ("train", "val")
_UNBOUNDED = 1 << 62


def unit_hash(seed: int, doc_id: str) -> int:
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8", "surrogatepass"), seed=seed)


def split_of(doc_id: str, seed: int, val_fraction: float) -> str:
    return "val" if unit_hash(seed, doc_id) < val_fraction * 2**64 else "train"


class TokenizeDocuments(PipelineStep):
    name = "tokenize"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_folder: str, parts_folder: str, eos_token: str, seed: int, val_fraction: float,
                 batch_size: int = 512):
        super().__init__()
        self.tokenizer_folder, self.parts_folder, self.eos_token = tokenizer_folder, Path(parts_folder), eos_token
        self.seed, self.val_fraction, self.batch_size = seed, val_fraction, batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = load_tokenizer(self.tokenizer_folder, self.eos_token)
        eos_id = tokenizer.token_to_id(self.eos_token)
        dtype = token_dtype_for_vocab(tokenizer.get_vocab_size())
        writers: dict[tuple[str, str], ShardWriter] = {}
        ids: dict[tuple[str, str], list[str]] = {}

        def flush(batch):
            with self.track_time("batch"):
                encodings = tokenizer.encode_batch([doc.text for doc in batch], add_special_tokens=False)
            for doc, enc in zip(batch, encodings):
                key = (split_of(doc.id, self.seed, self.val_fraction), doc.metadata.get("source", "default"))
                if key not in writers:
                    writers[key] = ShardWriter(self.parts_folder / key[0] / key[1], f"part{rank:05d}",
                                               tokenizer.get_vocab_size(), _UNBOUNDED)
                    ids[key] = []
                tokens = np.empty(len(enc.ids) + 1, dtype=dtype)
                tokens[:-1] = enc.ids
                tokens[-1] = eos_id
                writers[key].write(tokens)
                ids[key].append(doc.id)
                self.stat_update(f"tokens/{key[0]}/{key[1]}", value=len(tokens))
                self.stat_update(f"documents/{key[0]}/{key[1]}")

        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        for key, writer in writers.items():
            writer.close()
            id_file = self.parts_folder / key[0] / key[1] / f"part{rank:05d}.ids.jsonl"
            id_file.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ids[key]), encoding="utf-8")
        return
        yield


class MergeShards(PipelineStep):
    """One task: shuffle each (split, source) by seeded id hash, write the final shards and the manifest."""

    name = "shard"
    type = "🔢 - TOKENIZER"

    def __init__(self, parts_folder: str, output_folder: str, tokenizer_folder: str, eos_token: str, seed: int,
                 max_tokens_per_shard: int, formats: list[str], resolved_config: dict):
        super().__init__()
        self.parts_folder, self.output_folder = Path(parts_folder), Path(output_folder)
        self.tokenizer_folder, self.eos_token, self.seed = tokenizer_folder, eos_token, seed
        self.max_tokens_per_shard, self.formats = max_tokens_per_shard, list(formats)
        self.resolved_config = resolved_config

    def _documents_in_order(self, folder: Path):
        entries = []  # (order key, doc id, reader index, document index)
        readers = []
        for ds_file in sorted(folder.glob("part*.ds")):
            reader = ShardReader(ds_file)
            doc_ids = [json.loads(line) for line in
                       (folder / (ds_file.name.split("_")[0] + ".ids.jsonl")).read_text(encoding="utf-8").splitlines()]
            if len(doc_ids) != reader.num_documents:
                raise RuntimeError(f"{ds_file}: {reader.num_documents} documents but {len(doc_ids)} ids")
            entries.extend((unit_hash(self.seed, doc_id), doc_id, len(readers), i) for i, doc_id in enumerate(doc_ids))
            readers.append(reader)
        entries.sort()
        for _, _, reader_idx, doc_idx in entries:
            yield readers[reader_idx].document(doc_idx)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = load_tokenizer(self.tokenizer_folder, self.eos_token)
        vocab_size = tokenizer.get_vocab_size()
        splits: dict[str, dict[str, list]] = {}
        for split in SPLITS:  # a rerun rewrites every shard: none of an earlier attempt may linger
            shutil.rmtree(self.output_folder / split, ignore_errors=True)
        for split in SPLITS:
            for source_folder in sorted(p for p in (self.parts_folder / split).glob("*") if p.is_dir()):
                source = source_folder.name
                writer = ShardWriter(self.output_folder / split, source, vocab_size, self.max_tokens_per_shard,
                                     formats=self.formats, tokenizer_name="tokenizer/tokenizer.json")
                for tokens in self._documents_in_order(source_folder):
                    writer.write(tokens)
                shards = splits.setdefault(split, {})[source] = writer.close()
                self.stat_update(f"shards/{split}", value=len(shards))
        manifest = manifest_lib.build(
            tokenizer_folder=Path(self.tokenizer_folder).relative_to(self.output_folder),
            vocab_size=vocab_size,
            eos_token=self.eos_token,
            eos_id=tokenizer.token_to_id(self.eos_token),
            token_dtype=np.dtype(token_dtype_for_vocab(vocab_size)).name,
            splits=splits,
            resolved_config=self.resolved_config,
        )
        manifest_lib.write(manifest, self.output_folder)
        return
        yield
