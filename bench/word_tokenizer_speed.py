"""Speed of datatrove's quality filters and MinHash signatures with FastWordTokenizer vs the stock spaCy one.

Runs each step, and the tokenizer calls alone, over the same documents with both tokenizers and prints
documents per CPU-second (time.process_time) and the speed-up. "cold" starts from empty caches, like a
worker's first task; "warm" is a second pass over the same documents with the same tokenizer. Also checks
that both tokenizers lead to the same outcomes: decisions, C4's rewritten text, MinHash signatures.

    python -m bench.word_tokenizer_speed                                  # data/sample
    python -m bench.word_tokenizer_speed --docs-dir bench/corpus --limit 500

A documents directory is laid out like data/sample: books/**/*.txt (cut into ~3,000-character documents
at paragraph breaks), news/**/*.jsonl[.gz] (field "text"), web/**/*.warc[.gz] or *.html (main text
extracted with trafilatura).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.utils.word_tokenizers import WordTokenizer

from bench.common import SAMPLE
from bench.corpus_texts import load_texts
from data_pipeline.fast.word_tokenizer import FastWordTokenizer, get_word_tokenizer


Step = Callable[[WordTokenizer, list[str]], list[Any]]  # one step's outcome for each document


def filter_step(make_filter: Callable[[WordTokenizer], Any]) -> Step:
    def run(tokenizer: WordTokenizer, texts: list[str]) -> list[Any]:
        step = make_filter(tokenizer)
        documents = [Document(text=text, id=str(i)) for i, text in enumerate(texts)]
        # C4 rewrites the text of the documents it keeps: that is part of its outcome.
        return [(step.filter(document), document.text) for document in documents]

    return run


def minhash_step(tokenizer: WordTokenizer, texts: list[str]) -> list[Any]:
    with tempfile.TemporaryDirectory() as output_folder:
        step = MinhashDedupSignature(output_folder=output_folder, language=tokenizer)
        signatures = []
        for text in texts:  # as MinhashDedupSignature.run does for each document
            shingles = step.get_shingles(text)
            signatures.append(step.get_signature(shingles) if shingles.size else None)
        return signatures


def tokenizer_call(method: str) -> Step:
    def run(tokenizer: WordTokenizer, texts: list[str]) -> list[Any]:
        return [getattr(tokenizer, method)(text) for text in texts]

    return run


# The tokenizers alone, for reference: the steps below add work of their own.
TOKENIZER_CALLS: dict[str, Step] = {method: tokenizer_call(method) for method in ("word_tokenize", "span_tokenize")}
STEPS: dict[str, Step] = {
    "GopherQualityFilter": filter_step(lambda tokenizer: GopherQualityFilter(language=tokenizer)),
    "GopherRepetitionFilter": filter_step(lambda tokenizer: GopherRepetitionFilter(language=tokenizer)),
    "C4QualityFilter": filter_step(
        lambda tokenizer: C4QualityFilter(filter_no_terminal_punct=True, language=tokenizer)
    ),
    "FineWebQualityFilter": filter_step(lambda tokenizer: FineWebQualityFilter(language=tokenizer)),
    "MinhashDedupSignature": minhash_step,
}


def timed(step: Step, tokenizer: WordTokenizer, texts: list[str]) -> tuple[float, list[Any]]:
    start = time.process_time()
    outcomes = step(tokenizer, texts)
    return time.process_time() - start, outcomes


def table_row(name: str, n_documents: int, spacy: float, cold: float, warm: float, outcomes: str = "") -> str:
    rates = "".join(f"{n_documents / seconds:>12.0f}" for seconds in (spacy, cold, warm))
    return f"{name:<24}{rates}{spacy / cold:>13.1f}x{spacy / warm:>13.1f}x  {outcomes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-dir", type=Path, default=SAMPLE, help="documents directory (default: data/sample)")
    parser.add_argument("--limit", type=int, help="at most this many documents of each kind")
    args = parser.parse_args()

    texts = load_texts(args.docs_dir, args.limit)
    if not texts:
        raise SystemExit(f"no documents under {args.docs_dir}")
    print(f"{len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M characters from {args.docs_dir}\n")

    spacy_tokenizer = get_word_tokenizer("stock")
    spacy_tokenizer.word_tokenize("Load spaCy before the clock starts.")
    print(f"{'documents/CPU-second':<24}{'spacy':>12}{'fast cold':>12}{'fast warm':>12}", end="")
    print(f"{'speed-up cold':>14}{'speed-up warm':>14}")
    totals = {"spacy": 0.0, "cold": 0.0, "warm": 0.0}
    for name, step in {**TOKENIZER_CALLS, **STEPS}.items():
        spacy_seconds, expected = timed(step, spacy_tokenizer, texts)
        fast_tokenizer = FastWordTokenizer()  # empty caches
        cold_seconds, cold_outcomes = timed(step, fast_tokenizer, texts)
        warm_seconds, warm_outcomes = timed(step, fast_tokenizer, texts)
        if name in STEPS:
            for key, seconds in zip(totals, (spacy_seconds, cold_seconds, warm_seconds)):
                totals[key] += seconds
        differ = sum(outcome != reference for outcome, reference in zip(cold_outcomes, expected))
        differ += sum(outcome != reference for outcome, reference in zip(warm_outcomes, expected))
        outcomes = "same outcomes" if not differ else f"DIFFERENT OUTCOMES: {differ}"
        print(table_row(name, len(texts), spacy_seconds, cold_seconds, warm_seconds, outcomes), flush=True)
    print(table_row(f"all {len(STEPS)} steps", len(texts), totals["spacy"], totals["cold"], totals["warm"]))


if __name__ == "__main__":
    main()
