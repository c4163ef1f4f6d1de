"""Whole pipeline, ours vs the same steps in datatrove's stock configuration, on the same corpus.

Ours: `components=fast` (the default: the fast word tokenizer, trafilatura with compiled discard XPaths, fast
Gopher repetition counts). Stock: `components=stock` (datatrove's spaCy word tokenizer, stock trafilatura,
datatrove's Gopher repetition filter).
Reports documents per CPU-second of both and their ratio (target >= 3x), and asserts that the two
runs keep and remove exactly the same documents (and leave the same text) at every stage.

    python -m bench.pipeline_speed                 # the ~100 MB corpus of bench/fetch_corpus.sh
    python -m bench.pipeline_speed --smoke         # the bundled sample (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import CORPUS, SAMPLE, corpus_sources, documents_read, kept_documents, run_pipelines

STAGES = ("clean", "exact", "near", "paragraph")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--smoke", action="store_true", help="run on the bundled sample corpus")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--parallel", action="store_true", help="run both side by side (CPU time is measured per run)")
    args = parser.parse_args()
    corpus = SAMPLE if args.smoke else args.corpus
    if not corpus.exists():
        raise SystemExit(f"{corpus} does not exist: run bench/fetch_corpus.sh first")
    overrides = corpus_sources(corpus) + [f"executor.tasks={args.tasks}", "tokenizer.vocab_size=8192"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"ours": (tmp / "ours", overrides),
                "stock": (tmp / "stock", overrides + ["components=stock"])}
        results = run_pipelines(runs, parallel=args.parallel)
        for name, r in results.items():
            print(f"{name:>6}: {documents_read(r.report)} documents, {r.cpu_seconds:.1f} CPU-s, "
                  f"{r.wall_seconds:.1f} s wall, peak RSS {r.peak_rss_mb:.0f} MB", flush=True)
        for stage in STAGES:
            ours, stock = kept_documents(tmp / "ours", stage), kept_documents(tmp / "stock", stage)
            assert ours.keys() == stock.keys(), f"{stage}: different documents kept ({len(ours)} vs {len(stock)})"
            assert ours == stock, f"{stage}: same documents, different text"
            print(f"{stage:>9}: identical decisions ({len(ours)} documents kept)")
        docs = documents_read(results["ours"].report)
        speed = {name: docs / r.cpu_seconds for name, r in results.items()}
        ratio = speed["ours"] / speed["stock"]
        print(f"documents per CPU-second: ours {speed['ours']:.1f}, stock {speed['stock']:.1f}, ratio {ratio:.2f}x (target >= 3x)")
        if args.json:
            args.json.write_text(json.dumps({"documents": docs, "docs_per_cpu_s": speed, "ratio": ratio,
                                             "cpu_seconds": {k: r.cpu_seconds for k, r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
