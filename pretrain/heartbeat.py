"""Which rank stopped answering: a thread on every rank rewrites a small heartbeat file (rank, host, last
step, time) in the run's folder every few seconds, also while its main thread waits in a collective. When
a collective fails or times out, the report reads them all: a rank that died or froze has a stale one.

A timed-out collective says only that it timed out, and a rank that was killed prints nothing: the
heartbeats are what tells a user which rank and host to look at.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from pretrain.trainer import Callback, StepResult, Trainer
from shard_format.atomic import write_text_atomic

MAX_INTERVAL_S = 30.0


class Heartbeat(Callback):
    """Rewrites `<folder>/rank<r>.json` every `interval_s` seconds from the start of training to its end."""

    def __init__(self, folder: str | os.PathLike, rank: int, interval_s: float = MAX_INTERVAL_S):
        self.folder, self.rank, self.interval_s = Path(folder), rank, interval_s
        self.host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        path = self.folder / f"rank{self.rank:05d}.json"
        write_text_atomic(path, json.dumps({"rank": self.rank, "host": self.host, "step": self.step, "time": time.time()}))

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except OSError:  # a full or vanished folder must not end the run
                pass

    def on_train_start(self, trainer: Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.step = trainer.step
        self.beat()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)
        self._thread.start()

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        self.step = result.step

    def on_train_end(self, trainer: Trainer) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()

    def failure_report(self, error: BaseException, step: int, world_size: int) -> str:
        """What a rank prints when its step fails (a collective that failed or timed out)."""
        return (f"rank {self.rank} on {self.host}: step {step} failed: {str(error)[:500]}\n"
                + report(self.folder, world_size, self.interval_s))


def heartbeat_interval(collective_timeout_minutes: float) -> float:
    """Several beats per collective timeout, at most one per MAX_INTERVAL_S."""
    return min(MAX_INTERVAL_S, collective_timeout_minutes * 60 / 4)


def report(folder: str | os.PathLike, world_size: int, interval_s: float, now: float | None = None) -> str:
    """Every rank's last heartbeat, the silent ones first: ranks with none, then the stale ones (older than
    two intervals: the process died or froze), then the recent ones (a rank killed a moment ago can
    still have a recent one: srun's or the launcher's own message names it then)."""
    now = time.time() if now is None else now
    beats = {}
    for path in Path(folder).glob("rank*.json"):
        try:
            beat = json.loads(path.read_text())
            beats[int(beat["rank"])] = beat
        except (OSError, ValueError, KeyError):
            continue
    lines = [f"  rank {r}: no heartbeat" for r in range(world_size) if r not in beats]
    for beat in sorted(beats.values(), key=lambda b: b["time"]):
        age = now - beat["time"]
        state = "SILENT: died or froze" if age > 2 * interval_s else "recent"
        lines.append(f"  rank {beat['rank']} on {beat['host']}: {state}, last heartbeat {age:.0f} s ago, "
                     f"after step {beat['step']}")
    return "last heartbeat of every rank, the silent first:\n" + "\n".join(lines)
