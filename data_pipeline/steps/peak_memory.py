"""The peak resident memory of one task, recorded in its stage's stats.

Placed last in a stage's pipeline: datatrove chains the steps as generators, so this step's body
starts before any upstream step does its work and ends after all of them. It resets the process's
peak at the start, which makes the figure the task's own even when one process runs several tasks
(datatrove's local executor reuses its pool workers, and runs every task in-process with workers=1).
"""

from __future__ import annotations

import resource
import sys

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

PEAK_MEMORY_STEP_NAME = "peak_memory"
PEAK_RSS_STAT = "peak_rss_mb"
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def reset_peak_rss() -> bool:
    """Make the peak RSS the current RSS (Linux: "5" to clear_refs); False where the system cannot."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(resettable: bool = True) -> float:
    """The peak RSS since the last reset (VmHWM); without a resettable peak, the process's lifetime peak."""
    if resettable:
        try:
            with open(_STATUS) as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss / 2**20 if sys.platform == "darwin" else max_rss / 1024  # bytes on macOS, KiB elsewhere


class PeakMemory(PipelineStep):
    name = PEAK_MEMORY_STEP_NAME
    type = "📏 - METER"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        resettable = reset_peak_rss()
        if data:
            yield from data
        self.stat_update(PEAK_RSS_STAT, value=round(peak_rss_mb(resettable), 1), unit="task")
