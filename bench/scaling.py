"""Scaling: the pipeline on a quarter of the corpus and on all of it.

Target: CPU time at 4x the input <= 4.6x the CPU time at 1x; peak RSS at both is reported.
The quarter takes every 4th file of each source folder (every 4th line of a JSON Lines file that
is a source on its own), so both inputs have the same mix.

    python bench/scaling.py            # the corpus of bench/fetch_corpus.sh
    python bench/scaling.py --smoke    # the bundled sample (what CI runs)
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
from pathlib import Path

from common import CORPUS, SAMPLE, corpus_sources, documents_read, run_pipeline


def every_nth(corpus: Path, dest: Path, n: int) -> Path:
    for source in sorted(p for p in corpus.iterdir() if p.is_dir() and p.name != "raw"):
        files = sorted(Path(d) / f for d, _, names in os.walk(source, followlinks=True) for f in names if not f.startswith("."))
        (dest / source.name).mkdir(parents=True)
        if len(files) == 1 and ".jsonl" in files[0].name:
            opener = gzip.open if files[0].suffix == ".gz" else open
            with opener(files[0], "rt", encoding="utf-8") as fh:
                lines = fh.readlines()[::n]
            (dest / source.name / files[0].name.replace(".gz", "")).write_text("".join(lines), encoding="utf-8")
            continue
        for i, path in enumerate(files[::n]):
            os.symlink(path.resolve(), dest / source.name / f"{i:06d}_{path.name}")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    corpus = SAMPLE if args.smoke else args.corpus
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {"1x": every_nth(corpus, tmp / "in1", 4), "4x": every_nth(corpus, tmp / "in4", 1)}
        results = {}
        for name, folder in inputs.items():
            results[name] = run_pipeline(tmp / f"out{name}", corpus_sources(folder) + [f"executor.tasks={args.tasks}"])
            r = results[name]
            print(f"{name}: {documents_read(r.report)} documents, {r.cpu_seconds:.1f} CPU-s, {r.wall_seconds:.1f} s wall, "
                  f"peak RSS {r.peak_rss_mb:.0f} MB", flush=True)
        ratio = results["4x"].cpu_seconds / results["1x"].cpu_seconds
        docs = documents_read(results["4x"].report) / max(1, documents_read(results["1x"].report))
        print(f"4x input ({docs:.1f}x documents): {ratio:.2f}x the CPU time of 1x (target <= 4.6x)")


if __name__ == "__main__":
    main()
