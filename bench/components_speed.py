"""Speed of the fast components beside the word tokenizer, each against its stock datatrove counterpart.

- HTML extraction: trafilatura as datatrove calls it, stock vs with the compiled discard XPaths
  (data_pipeline/fast/discard_xpaths.py); asserts the same extracted text for every page.
- Gopher repetition: datatrove's `GopherRepetitionFilter` vs `FastGopherRepetitionFilter`
  (data_pipeline/fast/repetition.py), both with the fast word tokenizer; asserts the same decisions.
- Gopher quality and C4: datatrove's `GopherQualityFilter` and `C4QualityFilter` vs `FastGopherQualityFilter`
  and `FastC4QualityFilter` (data_pipeline/fast/heuristics.py), on the books, news and extracted web texts;
  asserts the same decisions (and, for C4, the same text left).
- Text normalization: ftfy on every line vs on the lines it would change (data_pipeline/fast/ftfy_lines.py);
  asserts the same text.
- MinHash: datatrove's `MinhashDedupSignature` vs `FastMinhashDedupSignature` (data_pipeline/fast/minhash_signature.py),
  shingles and signature of each text; asserts the same signatures.

Prints documents per CPU-second (time.process_time) and the speed-up, best of `--repeats` passes.

    python -m bench.components_speed                                   # data/sample
    python -m bench.components_speed --docs-dir bench/corpus --limit 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter

from bench.common import SAMPLE
from bench.corpus_texts import book_texts, news_texts, web_pages
from data_pipeline.fast.heuristics import FastC4QualityFilter, FastGopherQualityFilter
from data_pipeline.fast.minhash_signature import FastMinhashDedupSignature
from data_pipeline.fast.repetition import FastGopherRepetitionFilter
from data_pipeline.fast.word_tokenizer import get_word_tokenizer
from data_pipeline.steps.extract import HtmlExtractor
from data_pipeline.steps.normalize import TextNormalizer


def best_time(run: Callable[[], list], repeats: int) -> tuple[float, list]:
    best, outcome = float("inf"), []
    for _ in range(repeats):
        start = time.process_time()
        outcome = run()
        best = min(best, time.process_time() - start)
    return best, outcome


def compare(name: str, items: list, stock: Callable, fast: Callable, repeats: int) -> list:
    """Times `stock` and `fast` over `items`, checks that they give the same outcomes and returns them."""
    stock_seconds, expected = best_time(lambda: [stock(item) for item in items], repeats)
    fast_seconds, actual = best_time(lambda: [fast(item) for item in items], repeats)
    differ = sum(a != e for a, e in zip(actual, expected))
    if differ:
        raise SystemExit(f"{name}: {differ} of {len(items)} outcomes differ from the stock component")
    print(f"{name:<20}{len(items):>8}{len(items) / stock_seconds:>12.1f}{len(items) / fast_seconds:>12.1f}"
          f"{stock_seconds / fast_seconds:>9.2f}x  same outcomes", flush=True)
    return actual


def decide(doc_filter: BaseFilter) -> Callable[[str], tuple]:
    """The filter's verdict on a text, and the text it leaves (C4 drops lines), on a fresh document."""

    def verdict(text: str) -> tuple:
        document = Document(text=text, id="")
        return doc_filter.filter(document), document.text

    return verdict


def signature(step: MinhashDedupSignature) -> Callable[[str], list]:
    return lambda text: step.get_signature(step.get_shingles(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-dir", type=Path, default=SAMPLE, help="documents directory (default: data/sample)")
    parser.add_argument("--limit", type=int, help="at most this many documents of each kind")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pages = list(web_pages(args.docs_dir / "web"))[: args.limit]
    texts = list(book_texts(args.docs_dir / "books"))[: args.limit] + list(news_texts(args.docs_dir / "news"))[: args.limit]
    if not pages or not texts:
        raise SystemExit(f"{args.docs_dir} needs web pages and book or news texts")

    print(f"{'documents/CPU-second':<20}{'docs':>8}{'stock':>12}{'fast':>12}{'speed-up':>10}")
    # `extract` is trafilatura's call as datatrove makes it (without the sandbox process around it)
    stock_extract, fast_extract = HtmlExtractor(compiled_xpaths=False).extract, HtmlExtractor(compiled_xpaths=True).extract
    extracted = compare("HTML extraction", pages, stock_extract, fast_extract, args.repeats)
    texts += [text for text in extracted if text]

    tokenizer = get_word_tokenizer("fast")
    for text in texts:  # the tokenizer's caches warm for both
        tokenizer.word_tokenize(text)
    for name, stock, fast in (
        ("Gopher repetition", GopherRepetitionFilter, FastGopherRepetitionFilter),
        ("Gopher quality", GopherQualityFilter, FastGopherQualityFilter),
        ("C4", C4QualityFilter, FastC4QualityFilter),
    ):
        compare(name, texts, decide(stock(language=tokenizer)), decide(fast(language=tokenizer)), args.repeats)

    stock_normalize, fast_normalize = TextNormalizer(skip_plain_lines=False).format, TextNormalizer().format
    compare("normalization", texts, stock_normalize, fast_normalize, args.repeats)

    with tempfile.TemporaryDirectory() as unused_output:
        stock_minhash = MinhashDedupSignature(unused_output, language=tokenizer)
        fast_minhash = FastMinhashDedupSignature(unused_output, language=tokenizer)
        with_shingles = [text for text in texts if len(stock_minhash.get_shingles(text))]
        compare("MinHash signatures", with_shingles, signature(stock_minhash), signature(fast_minhash), args.repeats)


if __name__ == "__main__":
    main()
