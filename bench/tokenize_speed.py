"""Tokenization: the pipeline's tokenize step vs raw `tokenizers` encode_batch on the same text.

Target: the step delivers >= 0.7x the tokens per second of bare encode_batch (its overhead is
splitting, EOS, dtype conversion and writing the per-task token files).

    python -m bench.tokenize_speed                       # text of the bundled sample, repeated to ~20 MB
    python -m bench.tokenize_speed --smoke               # ~2 MB (what CI runs)
    python -m bench.tokenize_speed --docs-dir OUT/work/docs/paragraph --tokenizer OUT/tokenizer
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from datatrove.data import Document
from tokenizers import Tokenizer

from bench.common import SAMPLE
from data_pipeline.steps.tokens import TokenizeDocuments
from data_pipeline.tokenizer import save_hf_tokenizer, train_bpe

EOS = "<|endoftext|>"


def sample_documents(target_chars: int) -> list[Document]:
    texts = [p.read_text(encoding="utf-8") for p in sorted((SAMPLE / "books").glob("*.txt"))]
    paragraphs = [p for t in texts for p in t.split("\n\n") if p.strip()]
    docs, size, i = [], 0, 0
    while size < target_chars:  # documents of ~20 paragraphs, like a mid-sized web page
        text = "\n\n".join(paragraphs[(i * 20 + j) % len(paragraphs)] for j in range(20))
        docs.append(Document(text=text, id=f"doc{i}", metadata={"source": "books"}))
        size, i = size + len(text), i + 1
    return docs


def load_documents(folder: Path) -> list[Document]:
    docs = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            docs.append(Document(text=d["text"], id=d["id"], metadata=d.get("metadata", {})))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--docs-dir", type=Path)
    parser.add_argument("--tokenizer", type=Path, help="a folder with tokenizer.json (default: train one on the text)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    docs = load_documents(args.docs_dir) if args.docs_dir else sample_documents(2_000_000 if args.smoke else 20_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.tokenizer:
            tok_dir = args.tokenizer
        else:
            tok_dir = tmp / "tokenizer"
            save_hf_tokenizer(train_bpe((d.text for d in docs[:200]), 8192, 2, EOS), tok_dir, EOS)
        tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        texts = [d.text for d in docs]

        def raw() -> int:
            n = 0
            for i in range(0, len(texts), args.batch_size):
                n += sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts[i:i + args.batch_size], add_special_tokens=False))
            return n

        def step() -> int:
            out = tmp / f"parts{time.perf_counter_ns()}"
            tokenize = TokenizeDocuments(str(tok_dir), str(out), EOS, seed=1, sources=sorted({d.metadata.get("source", "default") for d in docs}),
                                         batch_size=args.batch_size)
            list(tokenize.run(iter(docs), rank=0, world_size=1))
            return sum(int(v.total) for k, v in tokenize.stats.stats.items() if k.startswith("tokens/"))

        best = {}
        for name, fn in (("raw encode_batch", raw), ("pipeline step", step)) * args.repeats:
            start = time.perf_counter()
            tokens = fn()
            rate = tokens / (time.perf_counter() - start)
            best[name] = max(best.get(name, 0.0), rate)
        for name, rate in best.items():
            print(f"{name:>17}: {rate / 1e6:.2f} M tokens/s ({tokens / 1e6:.1f} M tokens, best of {args.repeats})")
        ratio = best["pipeline step"] / best["raw encode_batch"]
        print(f"ratio {ratio:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    main()
