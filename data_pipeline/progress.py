"""Progress of a run: tasks count what they read into small files, the launching process shows the sums.

Each task of a stage that reads documents has a `CountProgress` step right after its reader; it writes
`logs/<stage>/progress/<rank>.json` (documents and UTF-8 bytes read so far) at most every `interval_s`
and at the end, and logs the same counts to the task log. `StageProgress`, in the launching process,
follows the completion markers and sums the progress files (the folder is shared with the Slurm nodes,
so this follows a Slurm run too): a tqdm bar per stage on a terminal, one plain line per running stage
every `interval_s` otherwise (Slurm output, CI logs).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseReader
from datatrove.utils.logging import logger

from data_pipeline.executors import Stage, completed_tasks, logging_dir
from data_pipeline.readers import SourceReader
from data_pipeline.steps.meter import utf8_length
from data_pipeline.steps.peak_memory import PeakMemory
from monitoring.console import human_bytes
from shard_format.atomic import write_text_atomic

PROGRESS_STEP_NAME = "progress"
_TTY_POLL_S = 0.25  # how often a terminal bar looks for completed tasks
_TTY_COUNTS_S = 2.0  # how often it re-reads the progress files (thousands of them on a big Slurm run)


def hide_library_bars_without_terminal() -> None:
    """Without a terminal, the tqdm bars of libraries (datatrove's MinHash filter has one) would write
    carriage-return redraws into the log; tqdm reads TQDM_DISABLE in every process the run starts (local
    workers, and Slurm jobs, which inherit the submitting environment)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def progress_folder(output_dir: str | os.PathLike, stage: Stage) -> Path:
    return logging_dir(output_dir, stage) / "progress"


class CountProgress(PipelineStep):
    """Counts the documents and bytes passing by and writes them to the task's progress file."""

    name = PROGRESS_STEP_NAME
    type = "📏 - METER"

    def __init__(self, folder: str | os.PathLike, interval_s: float):
        super().__init__()
        self.folder, self.interval_s = Path(folder), interval_s

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{rank:05d}.json"
        documents = size = 0
        next_write = time.monotonic() + self.interval_s

        def write() -> None:
            write_text_atomic(path, json.dumps({"documents": documents, "bytes": size}))
            logger.info(f"progress: {documents} documents, {size} bytes read")

        for doc in data:
            documents += 1
            size += utf8_length(doc.text)
            yield doc
            if time.monotonic() >= next_write:
                write()
                next_write = time.monotonic() + self.interval_s
        write()


def with_task_monitors(pipeline: list, output_dir: str | os.PathLike, stage: Stage, interval_s: float) -> list:
    """The stage's pipeline with a progress counter after its reader (when it starts with one) and the
    peak-memory probe last, where its body starts before and ends after all the upstream work."""
    steps = list(pipeline)
    if steps and isinstance(steps[0], (BaseReader, SourceReader)):
        steps.insert(1, CountProgress(progress_folder(output_dir, stage), interval_s))
    return steps + [PeakMemory()]


@dataclass(frozen=True)
class StageCounts:
    tasks_done: int
    documents: int
    bytes: int
    counted: bool  # whether the stage's tasks count documents (it reads some) and have written counts

    def describe(self, tasks: int) -> str:
        if not self.counted:
            return f"{self.tasks_done}/{tasks} tasks"
        return f"{self.tasks_done}/{tasks} tasks, {self.documents:,} docs, {human_bytes(self.bytes)}"


def stage_counts(output_dir: str | os.PathLike, stage: Stage, with_documents: bool = True) -> StageCounts:
    documents = size = 0
    folder = progress_folder(output_dir, stage)
    counted = folder.is_dir()
    if with_documents and counted:
        for path in folder.glob("*.json"):
            try:
                counts = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # replaced or removed while listing: the next poll reads it
                continue
            documents, size = documents + counts["documents"], size + counts["bytes"]
    return StageCounts(completed_tasks(output_dir, stage), documents, size, counted)


def _rates(counts: StageCounts, first_seen: tuple[float, StageCounts], now: float) -> str:
    """Documents and bytes per second since the stage was first seen running (not counting what tasks of
    an earlier, resumed run did)."""
    since, start = first_seen
    elapsed = now - since
    if not counts.counted:
        return ""
    if elapsed <= 0:
        return ", - docs/s, - MB/s"
    return (f", {(counts.documents - start.documents) / elapsed:,.0f} docs/s, "
            f"{(counts.bytes - start.bytes) / elapsed / 1e6:,.1f} MB/s")


class StageProgress:
    """Shows the progress of a run's stages while it runs (see the module docstring); `enabled=False`
    shows nothing."""

    def __init__(self, stages: list[Stage], output_dir: str, enabled: bool = True, interval_s: float = 10.0,
                 stream: TextIO | None = None):
        self.stages, self.output_dir, self.enabled, self.interval_s = stages, output_dir, enabled, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        is_tty = getattr(self.stream, "isatty", lambda: False)()
        (self._draw_bars if is_tty else self._write_lines)()

    def _label(self, index: int, stage: Stage) -> str:
        return f"[{index:>2}/{len(self.stages)}] {stage.title}"

    def _draw_bars(self) -> None:
        from tqdm import tqdm

        width = max(len(s.title) for s in self.stages)
        for i, stage in enumerate(self.stages, 1):
            desc = f"[{i:>2}/{len(self.stages)}] {stage.title:<{width}}"
            with tqdm(total=stage.tasks, desc=desc, unit="task", leave=True, file=self.stream) as bar:
                counts_read_at = 0.0
                while True:
                    now = time.monotonic()
                    with_documents = now - counts_read_at >= _TTY_COUNTS_S
                    counts = stage_counts(self.output_dir, stage, with_documents)
                    if with_documents:
                        counts_read_at = now
                        if counts.counted:
                            bar.set_postfix_str(f"{counts.documents:,} docs, {human_bytes(counts.bytes)}", refresh=False)
                    bar.update(counts.tasks_done - bar.n)
                    if counts.tasks_done >= stage.tasks or self._stop.wait(_TTY_POLL_S):
                        break
                counts = stage_counts(self.output_dir, stage)  # the final documents and bytes on the bar that stays
                if counts.counted:
                    bar.set_postfix_str(f"{counts.documents:,} docs, {human_bytes(counts.bytes)}")
            if self._stop.is_set() and completed_tasks(self.output_dir, stage) < stage.tasks:
                return

    def _write_lines(self) -> None:
        first_seen: dict[str, tuple[float, StageCounts]] = {}
        finished: set[str] = set()

        def report_running_stages() -> None:
            now = time.monotonic()
            earlier_stage_running = False
            for i, stage in enumerate(self.stages, 1):
                if stage.name in finished:
                    continue
                counts = stage_counts(self.output_dir, stage)
                first_seen.setdefault(stage.name, (now, counts))
                if counts.tasks_done >= stage.tasks:
                    finished.add(stage.name)
                    print(f"{self._label(i, stage)}: done, {counts.describe(stage.tasks)}", file=self.stream, flush=True)
                elif not earlier_stage_running or counts.tasks_done or counts.documents:
                    rates = _rates(counts, first_seen[stage.name], now)
                    print(f"{self._label(i, stage)}: {counts.describe(stage.tasks)}{rates}", file=self.stream, flush=True)
                    earlier_stage_running = True
                else:  # a later stage that has not started: forget when it was first seen
                    first_seen.pop(stage.name)

        while len(finished) < len(self.stages):
            report_running_stages()
            if self._stop.wait(self.interval_s):
                report_running_stages()
                return

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)
