"""Bad input is counted, logged with where it was found, and listed in the report; nothing else is lost.

Each task appends one JSON line per bad record to `<folder>/<rank:05d>.jsonl`. The report merges them.
"""

from __future__ import annotations

import json
import os
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


def read_bad_records(folder: str | os.PathLike) -> list[BadRecord]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out: list[BadRecord] = []
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            out.extend(BadRecord(**json.loads(line)) for line in fh if line.strip())
    return out
