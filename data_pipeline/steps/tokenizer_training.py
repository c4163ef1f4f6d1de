"""The tokenizer stage: train a byte-level BPE on an even sample of the cleaned documents, or copy the
given tokenizer.

The sample is drawn from every task's documents file, not from the first ones until the budget runs
out (which would usually be one source): each file gets a fair share of what is left of
`train_max_chars` (remaining / files left, so a small file's unused share goes to the next ones),
split over a few windows at evenly spaced byte offsets of the file, so the sources a file holds one
after the other all contribute. Files are read one at a time, and only as far as their windows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_pipeline.tokenizer import load_tokenizer, save_hf_tokenizer, train_bpe

SAMPLE_CHARS_STAT = "sample_chars/"  # + source name: characters of that source in the training sample
WINDOWS_PER_FILE = 8


def _share(budget: int, parts: int) -> int:
    return -(-budget // parts)  # rounded up, so a budget smaller than the parts is not lost


def _allowance(left: int, windows_left: int, covered: int) -> int:
    """What `covered` of the file's `windows_left` remaining windows may take of the `left` characters."""
    return min(left, _share(left, windows_left) * covered)


class TrainingSample:
    """The (source, text) pairs of the sample, drawn from the JSONL documents files as they are iterated;
    `chars_by_source` holds what was drawn."""

    def __init__(self, files: list[Path], max_chars: int, windows_per_file: int = WINDOWS_PER_FILE):
        self.files, self.max_chars, self.windows_per_file = files, max_chars, windows_per_file
        self.chars_by_source: Counter[str] = Counter()

    def __iter__(self) -> Iterator[str]:
        remaining = self.max_chars
        for i, path in enumerate(self.files):
            budget = _share(remaining, len(self.files) - i)
            for source, text in self._from_file(path, budget):
                self.chars_by_source[source] += len(text)
                remaining -= len(text)
                yield text

    def _from_file(self, path: Path, budget: int) -> Iterator[tuple[str, str]]:
        windows = self.windows_per_file
        size = path.stat().st_size
        starts = [size * w // windows for w in range(windows)] + [size]
        used, window = 0, 0
        with open(path, "rb") as fh:
            while window < windows and used < budget:
                if starts[window]:  # move to the first line that starts at or after the window's start
                    fh.seek(starts[window] - 1)
                    fh.readline()
                # a long line can run into later windows, which then have no line of their own: their
                # shares go to this window, which ends where the last of them ends
                last, taken = window, 0
                while taken < _allowance(budget - used, windows - window, last - window + 1) \
                        and fh.tell() < starts[last + 1]:
                    offset = fh.tell()
                    line = fh.readline()
                    if not line.strip():
                        continue
                    while last + 1 < windows and starts[last + 1] < fh.tell():
                        last += 1
                    source, text = _parse_document(path, offset, line)
                    text = text[: _allowance(budget - used, windows - window, last - window + 1) - taken]
                    taken += len(text)
                    yield source, text
                used += taken
                window = last + 1


def _parse_document(path: Path, offset: int, line: bytes) -> tuple[str, str]:
    try:
        record = json.loads(line)
        return record.get("metadata", {}).get("source", "default"), record["text"]
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path}: offset {offset}: not a document (JSON with a text field): {exc}") from exc


class PrepareTokenizer(PipelineStep):
    """One task: train a byte-level BPE on a sample of the JSONL documents in `docs_folder`, or copy the
    given tokenizer. The characters each source gave the sample are stats `sample_chars/<source>`."""

    name = "tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, out_folder: str, path: str | None, vocab_size: int, min_frequency: int, eos_token: str,
                 train_max_chars: int, docs_folder: str | os.PathLike, show_progress: bool = False):
        super().__init__()
        self.out_folder, self.path, self.docs_folder = out_folder, path, Path(docs_folder)
        self.vocab_size, self.min_frequency, self.eos_token = vocab_size, min_frequency, eos_token
        self.train_max_chars, self.show_progress = train_max_chars, show_progress

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.path is not None:
            tokenizer = load_tokenizer(self.path, self.eos_token)
        else:
            sample = TrainingSample(sorted(self.docs_folder.glob("*.jsonl")), self.train_max_chars)
            with self.track_time("tokenizer"):
                tokenizer = train_bpe(sample, self.vocab_size, self.min_frequency, self.eos_token, self.show_progress)
            for source, chars in sorted(sample.chars_by_source.items()):
                self.stat_update(f"{SAMPLE_CHARS_STAT}{source}", value=chars)
        save_hf_tokenizer(tokenizer, self.out_folder, self.eos_token)
        self.stat_update("vocab_size", value=tokenizer.get_vocab_size())
        return
        yield
