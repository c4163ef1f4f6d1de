"""Weak scaling of the data pipeline: 4x the documents with 4x the tasks must need the same memory per task.

A corpus of many short documents made of real English sentences (from the bundled books and news), with
exact copies and near-duplicates (one word changed) mixed in, is run at 1x with T tasks and at 4x with 4T
tasks (the same documents per task: `dedup.find_tasks` follows the tasks, `shards.buckets` and
`dedup.minhash.bucket_workers` are scaled with them, so every stage's tasks hold the same share). Tasks
run in worker processes, as they would on a cluster (`--workers`). Per stage it prints the largest peak
RSS of a task and the stage's CPU seconds (the steps' time), from the runs' report.json. The stages of
one task (tokenizer, near clusters, manifest) run in the launching process.

Target: every stage's peak RSS at 4x <= 1.3x that at 1x + 50 MB, and its CPU time at 4x <= 4.4x that at 1x.

    python -m bench.pipeline_scale                 # 100,000 documents at 1x, 400,000 at 4x, T=2
    python -m bench.pipeline_scale --smoke         # 1,500 / 6,000 documents (what CI runs)
    python -m bench.pipeline_scale --json out.json # the figures, for README
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from pathlib import Path

from bench.common import SAMPLE, documents_read, run_pipeline
from bench.corpus_texts import book_texts, news_texts

RSS_RATIO, RSS_SLACK_MB, CPU_RATIO = 1.3, 50.0, 4.4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def real_sentences() -> list[str]:
    """Sentences of 6 to 40 words from the sample books and news, one line each."""
    texts = list(book_texts(SAMPLE / "books")) + list(news_texts(SAMPLE / "news"))
    sentences = {" ".join(s.split()) for text in texts for s in _SENTENCE_END.split(text)}
    return sorted(s for s in sentences if 6 <= len(s.split()) <= 40 and s[0].isupper())


def write_corpus(folder: Path, documents: int, seed: int, sentences: list[str], files: int) -> None:
    """`documents` news-style JSON lines over `files` files: 90% new texts of 6-12 sentences, 5% exact copies
    and 5% near copies (one word replaced) of an earlier document of the same file."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    per_file = -(-documents // files)
    for f in range(files):
        texts: list[str] = []
        with open(folder / f"part-{f:04d}.jsonl", "w", encoding="utf-8") as out:
            for i in range(min(per_file, documents - f * per_file)):
                roll = rng.random()
                if texts and roll < 0.05:
                    text = rng.choice(texts)
                elif texts and roll < 0.10:
                    words = rng.choice(texts).split(" ")
                    words[rng.randrange(len(words))] = rng.choice(("river", "lantern", "orchard", "harbour"))
                    text = " ".join(words)
                else:
                    text = " ".join(rng.choices(sentences, k=rng.randint(6, 12)))
                    texts.append(text)
                out.write(json.dumps({"id": f"{seed}-{f}-{i}", "text": text}) + "\n")


def run(tmp: Path, name: str, documents: int, tasks: int, scale: int, sentences: list[str], workers: int) -> dict:
    corpus = tmp / f"corpus_{name}"
    write_corpus(corpus, documents, seed=documents, sentences=sentences, files=tasks)
    overrides = ["input_dir=null", f"sources=[{{name: news, kind: news, paths: ['{corpus}']}}]",
                 f"executor.tasks={tasks}", f"shards.buckets={tasks}", f"dedup.minhash.bucket_workers={scale}",
                 "tokenizer.vocab_size=2048",
                 # the tokenizer's sample is capped below the 1x corpus, so the tokenizer stage sees as much at 4x
                 "tokenizer.train_max_chars=2000000"]
    measured = run_pipeline(tmp / f"out_{name}", overrides, workers=workers)
    report = measured.report
    print(f"{name}: {documents_read(report):,} documents, {tasks} tasks, {measured.wall_seconds:.0f} s wall", flush=True)
    return report


def compare(small: dict, large: dict) -> tuple[list[dict], bool]:
    rows, ok = [], True
    for stage, rss_1 in small["stage_peak_rss_mb"].items():
        rss_4, cpu_1, cpu_4 = large["stage_peak_rss_mb"][stage], small["stage_cpu_seconds"][stage], large["stage_cpu_seconds"][stage]
        rss_ok = rss_4 <= RSS_RATIO * rss_1 + RSS_SLACK_MB
        cpu_ok = cpu_4 <= CPU_RATIO * max(cpu_1, 0.05)  # a stage under 50 ms is all start-up
        ok &= rss_ok and cpu_ok
        rows.append({"stage": stage, "peak_rss_mb_1x": rss_1, "peak_rss_mb_4x": rss_4, "rss_ratio": rss_4 / rss_1,
                     "cpu_s_1x": cpu_1, "cpu_s_4x": cpu_4, "cpu_ratio": cpu_4 / max(cpu_1, 1e-9),
                     "within_target": rss_ok and cpu_ok})
    return rows, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000, help="documents at 1x")
    parser.add_argument("--tasks", type=int, default=2, help="tasks at 1x")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (this machine's cores)")
    parser.add_argument("--smoke", action="store_true", help="a small corpus: checks the benchmark runs")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    documents = 1_500 if args.smoke else args.documents
    sentences = real_sentences()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = run(tmp, "1x", documents, args.tasks, 1, sentences, args.workers)
        large = run(tmp, "4x", 4 * documents, 4 * args.tasks, 4, sentences, args.workers)
    rows, ok = compare(small, large)
    print(f"\n{'stage':<24} {'RSS 1x':>8} {'RSS 4x':>8} {'ratio':>6}   {'CPU 1x':>8} {'CPU 4x':>8} {'ratio':>6}")
    for r in rows:
        flag = "" if r["within_target"] else "  <- outside the target"
        print(f"{r['stage']:<24} {r['peak_rss_mb_1x']:>6.0f}MB {r['peak_rss_mb_4x']:>6.0f}MB {r['rss_ratio']:>5.2f}x   "
              f"{r['cpu_s_1x']:>7.1f}s {r['cpu_s_4x']:>7.1f}s {r['cpu_ratio']:>5.2f}x{flag}")
    print(f"target (peak RSS at 4x <= {RSS_RATIO}x 1x + {RSS_SLACK_MB:.0f} MB, CPU at 4x <= {CPU_RATIO}x 1x): "
          + ("met by every stage" if ok else "NOT met by every stage"))
    if args.json:
        args.json.write_text(json.dumps({"documents_1x": documents, "tasks_1x": args.tasks, "workers": args.workers,
                                         "stages": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
