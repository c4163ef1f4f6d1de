"""Asynchronous checkpoint writes: the training loop waits only for the copy of the state off the device.

`BackgroundWriter` is a DeepSpeed checkpoint engine (`engine.checkpoint_engine`): every file DeepSpeed
saves is copied to host memory inside `save()` (tensors that share storage stay shared), and a thread
writes it (`torch.save`, then fsync) while training goes on. `wait()` returns once everything queued is
durable, or raises what a write raised. pretrain/checkpoint.py writes the `COMPLETE` marker only after
every rank's `wait()`, and waits for one save before it starts the next.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointCommitInfo, CheckpointEngine


def to_host(obj: Any, memo: dict | None = None) -> Any:
    """A copy of a (nested) state with every tensor copied to host memory; views of one storage with the
    same layout map to one copy."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), tuple(obj.stride()), obj.dtype)
        if key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        items = ((k, to_host(v, memo)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):  # not a namedtuple
        return type(obj)(to_host(v, memo) for v in obj)
    return obj


def write_durably(obj: Any, path: str) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


class BackgroundWriter(CheckpointEngine):
    def __init__(self) -> None:
        super().__init__()
        self.name = "BackgroundWriter"
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self.last_write_end: float | None = None  # time.perf_counter() when the last write became durable
        threading.Thread(target=self._write_forever, name="checkpoint-writer", daemon=True).start()

    def _write_forever(self) -> None:
        while True:
            obj, path = self._queue.get()
            try:
                if self._error is None:  # after a failure the save is lost anyway: do not write the rest
                    write_durably(obj, path)
                    self.last_write_end = time.perf_counter()
            except BaseException as exc:  # raised by wait(), on the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    # ------------------------------------------------------------------ CheckpointEngine
    def create(self, info: CheckpointCommitInfo) -> None:
        self.raise_failure()

    def save(self, state_dict: Any, path: str) -> None:
        self._queue.put((to_host(state_dict), str(path)))

    def load(self, path: str, map_location=None) -> Any:
        self.wait()
        return torch.load(path, map_location=map_location, weights_only=False)

    def commit(self, info: CheckpointCommitInfo) -> bool:
        return True  # the files are durable only after wait(): pretrain/checkpoint.py marks them complete

    # ------------------------------------------------------------------ ours
    def wait(self) -> None:
        self._queue.join()
        self.raise_failure()

    def idle(self) -> bool:
        """Everything queued is written (or failed): `wait()` would return at once."""
        return self._queue.unfinished_tasks == 0

    def raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing a checkpoint failed: {error}") from error
