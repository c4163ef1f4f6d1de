"""Training batches on the rank's device.

DeepSpeed does not move a model's inputs: the trainer must hand it tensors on `engine.device`. A
background thread reads the next micro-batches from the loader (into pinned host memory on GPUs)
while the current step runs; the main thread copies each with `non_blocking=True`, so the copy
overlaps the compute queued before it. The loader is touched by that thread only; the state this
wrapper reports is the loader's state after the last batch handed out, not after the ones read ahead,
so a checkpoint resumes exactly where training stood.

Beside each batch it keeps the source of each row (`sources`, host memory) and counts the samples
drawn from each source so far (`samples_per_source`): both for the per-source metrics.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping

import numpy as np
import torch

from pretrain.data import TrainBatches

_POLL_S = 0.1  # how often a blocked reader thread looks whether it should stop


class DeviceBatches:
    """Iterator of ``(inputs, targets)`` LongTensors ``[micro_batch_size, seq_len]`` on `device`, with
    `depth` micro-batches read ahead. Same `state_dict()` / `load_state_dict()` / `tokens_consumed` as
    the loader it wraps."""

    def __init__(self, batches: TrainBatches, device: torch.device | str, depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.batches = batches
        self.device = torch.device(device)
        self.depth = depth
        self.pinned = self.device.type == "cuda"
        self._state = dict(batches.state_dict())
        self.sources: torch.Tensor | None = None  # int64 [micro_batch_size]: source index of each row handed out last
        self._counted = (0, np.zeros(len(self.source_names), dtype=np.int64))  # (global position, samples per source)
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reader thread
    def _start(self) -> None:
        self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
        self._thread = threading.Thread(target=self._read_ahead, args=(self._queue, self._stop),
                                        name="device-batches", daemon=True)
        self._thread.start()

    def _read_ahead(self, out: queue.Queue, stop: threading.Event) -> None:
        if self.pinned:
            # a thread's current CUDA device starts at 0: pinning from here would create a context there
            torch.cuda.set_device(self.device)
        shape = (self.batches.micro_batch_size, self.batches.seq_len + 1)
        while not stop.is_set():
            try:
                host = torch.empty(shape, dtype=torch.int64, pin_memory=self.pinned)
                self.batches.read_batch(out=host.numpy())
                sources = torch.from_numpy(self.batches.last_sources.astype(np.int64))
                item: object = (host, dict(self.batches.state_dict()), sources.pin_memory() if self.pinned else sources)
            except BaseException as exc:  # handed to the main thread, raised by its next()
                item = exc
            while not stop.is_set():
                try:
                    out.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def close(self) -> None:
        """Stop the reader thread and drop what it read ahead (the loader's position is then ahead of
        `state_dict()`: use `load_state_dict` before reading again)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = self._queue = self._stop = None

    # ------------------------------------------------------------------ iterator and state
    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        host, self._state, self.sources = item
        batch = host.to(self.device, non_blocking=self.pinned)
        return batch[:, :-1], batch[:, 1:]

    @property
    def tokens_consumed(self) -> int:
        return int(self._state["samples_consumed"]) * self.batches.seq_len

    @property
    def source_names(self) -> list[str]:
        return self.batches.order.sources

    @property
    def source_weights(self) -> dict[str, float]:
        """The configured weight of each source (proportional to its samples when none was configured)."""
        return dict(self.batches.order.weights)

    def tokens_per_source(self) -> dict[str, int]:
        return {name: n * self.batches.seq_len for name, n in self.samples_per_source().items()}

    def samples_per_source(self) -> dict[str, int]:
        """Samples drawn from each source so far, all ranks together (they sum to samples_consumed):
        counted from the sample order since the last call, so a call costs the samples read since then."""
        at, counts = self._counted
        now = int(self._state["samples_consumed"])
        if now < at:
            at, counts = 0, np.zeros_like(counts)
        counts = counts + self.batches.order.source_counts(at, now)
        self._counted = (now, counts)
        return {name: int(n) for name, n in zip(self.source_names, counts.tolist())}

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, int], samples_per_source: Mapping[str, int] | None = None) -> None:
        """`samples_per_source`: what `samples_per_source()` returned at that state (saved beside it); without
        it, or when the sources differ, the counts are derived from the order (costs the samples read)."""
        self.close()
        self.batches.load_state_dict(state)
        self._state = dict(self.batches.state_dict())
        consumed = int(self._state["samples_consumed"])
        saved = dict(samples_per_source or {})
        if sorted(saved) == sorted(self.source_names) and sum(saved.values()) == consumed:
            self._counted = (consumed, np.array([int(saved[s]) for s in self.source_names], dtype=np.int64))
        else:
            self._counted = (0, np.zeros(len(self.source_names), dtype=np.int64))
