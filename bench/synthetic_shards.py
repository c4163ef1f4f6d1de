"""Write a shard folder of random tokens (train and val, one source) with its manifest.

For throughput runs where the text does not matter (bench/gpu_check.sh): it needs numpy only, none of
the data pipeline's dependencies. `write_sparse_corpus` writes huge shards that cost no disk, for the
loader's benchmark and tests.

    python -m bench.synthetic_shards --out outputs/synthetic --tokens 200000000 --vocab 32000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from shard_format import manifest as manifest_lib
from shard_format.shards import ShardInfo, ShardWriter, token_dtype_for_vocab


def write_sparse_corpus(folder: Path, sources: Iterable[str], shards_per_split: Mapping[str, int], tokens_per_shard: int,
                        eos_id: int, fill: Callable[[BinaryIO, int], None]) -> dict:
    """A manifest over .ds shards of `tokens_per_shard` uint16 tokens, one document each, written as sparse
    files: all zeros but what `fill(file, tokens_per_shard)` writes. Returns the manifest."""
    splits: dict[str, dict[str, list[ShardInfo]]] = {}
    for split, count in shards_per_split.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for source in sources:
            shards = []
            for k in range(count):
                name = f"{source}_{k:05d}.ds"
                np.array([tokens_per_shard], dtype="<u8").tofile(folder / split / f"{name}.index")
                with open(folder / split / name, "wb") as f:
                    f.truncate(tokens_per_shard * 2)
                    fill(f, tokens_per_shard)
                shards.append(ShardInfo(path=name, documents=1, tokens=tokens_per_shard, sha256="0" * 64))
            splits.setdefault(split, {})[source] = shards
    manifest = manifest_lib.build(tokenizer_folder=Path("tokenizer"), vocab_size=1000, eos_token="<eos>", eos_id=eos_id,
                                  token_dtype="uint16", splits=splits, resolved_config={})
    manifest_lib.write(manifest, folder)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=200_000_000)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--doc-tokens", type=int, default=4096)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dtype = token_dtype_for_vocab(args.vocab)
    eos = args.vocab - 1
    splits = {}
    for split, total in (("train", args.tokens), ("val", max(args.tokens // 100, 10 * args.doc_tokens))):
        writer = ShardWriter(args.out / split, "synthetic", args.vocab, 100_000_000)
        for _ in range(total // args.doc_tokens):
            doc = rng.integers(0, eos, size=args.doc_tokens, dtype=dtype)
            doc[-1] = eos
            writer.write(doc)
        splits[split] = {"synthetic": writer.close()}
    manifest = manifest_lib.build(tokenizer_folder=Path("tokenizer"), vocab_size=args.vocab, eos_token="<|endoftext|>",
                                  eos_id=eos, token_dtype=np.dtype(dtype).name, splits=splits,
                                  resolved_config={"synthetic": vars(args) | {"out": str(args.out)}})
    print(f"wrote {manifest_lib.write(manifest, args.out)}")


if __name__ == "__main__":
    main()
