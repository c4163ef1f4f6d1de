"""Bad input is counted, logged with where it was found, and listed in the report; nothing else is lost.

Each task appends one JSON line per bad record to `<folder>/<rank:05d>.jsonl`; those files are the full
lists. The report streams through them for counts and a short sample, holding no list of its own.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from datatrove.utils.logging import logger


@dataclass(frozen=True)
class BadRecord:
    step: str  # which step found it: read, normalize, ...
    file: str  # the input file
    location: str  # "line 12", "offset 40960", "record 3", or "" for a whole-file problem
    error: str  # what was wrong, one line

    def describe(self) -> str:
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"[{self.step}] {where}: {self.error}"


class BadRecordLog:
    """Per-task sink for bad records. Cheap to create; opens its file on the first record."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        self._files: dict[int, object] = {}

    def start_task(self, rank: int) -> None:
        """Forget what an earlier, crashed attempt of this task logged: a rerun logs it again."""
        if self.folder is not None:
            (self.folder / f"{rank:05d}.jsonl").unlink(missing_ok=True)

    def add(self, record: BadRecord, rank: int = 0) -> None:
        logger.warning(f"bad record {record.describe()}")
        if self.folder is None:
            return
        fh = self._files.get(rank)
        if fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = self._files[rank] = open(self.folder / f"{rank:05d}.jsonl", "a", encoding="utf-8")
        fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
        fh.flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def __getstate__(self):  # datatrove pickles steps for its workers: never ship open files
        return {"folder": self.folder, "_files": {}}


def _bad_record_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def _records_in(path: Path) -> Iterator[BadRecord]:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield BadRecord(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{path}: line {number}: not a bad-record entry: {exc}") from exc


def read_bad_records(folder: str | os.PathLike) -> list[BadRecord]:
    """Every bad record in the folder, in rank order (for tests and small runs; the report streams)."""
    return [record for path in _bad_record_files(Path(folder)) for record in _records_in(path)]


# input files listed by name in a summary (those with the most bad records)
INPUT_FILES_LISTED = 100


def summarize_bad_records(folder: str | os.PathLike, relative_to: str | os.PathLike, sample_size: int = 20) -> dict:
    """{"count", "by_step", "by_input_file": the INPUT_FILES_LISTED input files with the most bad records and
    their counts, "input_files": how many input files had any, "sample": the first `sample_size` records
    in rank order, "files": the per-task lists, as paths relative to `relative_to`}, reading one record at
    a time."""
    count, by_step, by_input, sample, files = 0, Counter(), Counter(), [], []
    for path in _bad_record_files(Path(folder)):
        in_file = 0
        for record in _records_in(path):
            in_file += 1
            by_step[record.step] += 1
            by_input[record.file] += 1
            if len(sample) < sample_size:
                sample.append(asdict(record))
        if in_file:
            count += in_file
            files.append(str(path.relative_to(relative_to)))
    return {"count": count, "by_step": dict(sorted(by_step.items())),
            "by_input_file": dict(by_input.most_common(INPUT_FILES_LISTED)), "input_files": len(by_input),
            "sample": sample, "files": files}
