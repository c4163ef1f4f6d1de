"""What the filtering steps removed, kept small enough for the report: per task, the documents removed
per source, filter and reason, and the first SAMPLE_PER_FILTER removed documents of each filter with the
start of their text (so "why was this removed?" can be answered by reading it).

Each task of a filtering step saves `<folder>/<step>/<rank>.json` when it ends; `removed_summary` merges
the files. The dedup stages keep their own counts and samples in their audit summaries (dedup.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from datatrove.data import Document

from shard_format.atomic import write_text_atomic

SAMPLE_PER_FILTER = 5  # per task
SAMPLE_TEXT_CHARS = 300
REPORT_SAMPLE_PER_FILTER = 10


def text_start(text: str) -> str:
    """The first SAMPLE_TEXT_CHARS characters, a lone surrogate (JSON input may hold one) as "?", so that
    the summaries can be written as UTF-8."""
    return text[:SAMPLE_TEXT_CHARS].encode("utf-8", "replace").decode("utf-8")


class RemovedSample:
    """One filtering step's removed documents in the running task.

    Use as a context manager around the task (`add` each removed document), or hand it to a datatrove
    filter as `exclusion_writer`: it has the part of the writer interface those filters call (`write`),
    and takes the reason from the `filter_reason` they set. A task that removed nothing writes no file."""

    def __init__(self, folder: str | Path, step: str, filter_name: str | None = None):
        self.folder = Path(folder) / step
        self.filter_name = filter_name or step
        self._reset()

    def _reset(self) -> None:
        self._rank: int | None = None
        self._counts: Counter = Counter()
        self._sample: list[dict] = []
        self._sampled: Counter = Counter()

    def __enter__(self) -> "RemovedSample":
        self._reset()
        return self

    def add(self, doc: Document, filter_name: str, reason: str, rank: int) -> None:
        self._rank = rank
        source = doc.metadata.get("source", "")
        self._counts[(source, filter_name, reason)] += 1
        if self._sampled[filter_name] < SAMPLE_PER_FILTER:
            self._sampled[filter_name] += 1
            self._sample.append({"id": str(doc.id), "source": source, "filter": filter_name, "reason": reason,
                                 "text": text_start(doc.text)})

    def write(self, doc: Document, rank: int = 0, **_) -> None:
        self.add(doc, self.filter_name, doc.metadata.get("filter_reason", "rejected"), rank)

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None or self._rank is None:
            return
        counts = [{"source": s, "filter": f, "reason": r, "documents": n} for (s, f, r), n in sorted(self._counts.items())]
        write_text_atomic(self.folder / f"{self._rank:05d}.json",
                          json.dumps({"removed": counts, "sample": self._sample}, ensure_ascii=False) + "\n")

    def __getstate__(self):  # datatrove pickles steps for its workers: ship the settings, not a task's state
        return {"folder": self.folder, "filter_name": self.filter_name}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._reset()


def removed_summary(folder: str | Path) -> dict:
    """{"removed": rows of source, filter, reason, documents (summed over tasks), "sample": up to
    REPORT_SAMPLE_PER_FILTER documents per filter, in step and rank order}."""
    counts: Counter = Counter()
    sample: list[dict] = []
    per_filter: Counter = Counter()
    for path in sorted(Path(folder).glob("*/*.json")):
        try:
            task = json.loads(path.read_text(encoding="utf-8"))
            for row in task["removed"]:
                counts[(row["source"], row["filter"], row["reason"])] += row["documents"]
            for row in task["sample"]:
                if per_filter[row["filter"]] < REPORT_SAMPLE_PER_FILTER:
                    per_filter[row["filter"]] += 1
                    sample.append(row)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a removed-documents summary ({exc})") from exc
    return {"removed": [{"source": s, "filter": f, "reason": r, "documents": n} for (s, f, r), n in sorted(counts.items())],
            "sample": sample}
