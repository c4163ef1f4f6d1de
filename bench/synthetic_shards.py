"""Write a shard folder of random tokens (train and val, one source) with its manifest.

For throughput runs where the text does not matter (bench/gpu_mfu.sh): it needs numpy only, none of
the data pipeline's dependencies.

    python bench/synthetic_shards.py --out outputs/synthetic --tokens 200000000 --vocab 32000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline import manifest as manifest_lib  # noqa: E402
from data_pipeline.shards import ShardWriter, token_dtype_for_vocab  # noqa: E402


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
