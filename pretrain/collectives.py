"""The trainer's own collectives: loss sums, stop-signal agreement, evaluation sums and barriers.

They run over CPU tensors on a gloo process group of their own. On GPUs the default group is NCCL,
which refuses CPU tensors ("No backend type associated with device type cpu"), and these values are
bookkeeping that the host needs anyway: a value computed on the device is copied to the host once,
in the same call. `init()` creates the group right after the default one; every rank must call it
(creating a group is itself collective). Without a process group every function is local.
"""

from __future__ import annotations

import datetime
from typing import Sequence

import torch
import torch.distributed as dist

_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
_group: dist.ProcessGroup | None = None


def init(timeout: datetime.timedelta | None = None) -> None:
    """Create the host-side group (once) on top of the initialized default process group; its
    collectives raise after `timeout` (default: torch's)."""
    global _group
    if _group is None and dist.is_available() and dist.is_initialized():
        _group = dist.new_group(backend="gloo", timeout=timeout)


def destroy() -> None:
    """Destroy every process group, this one included (the end of a run)."""
    global _group
    _group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _host_group() -> dist.ProcessGroup | None:
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if _group is None:
        raise RuntimeError("pretrain.collectives.init() was not called after the process group was created")
    return _group


def all_reduce(values: Sequence[float] | torch.Tensor, op: str = "sum") -> list[float]:
    """Reduce a few numbers over all ranks (float64). `values` may be a tensor on any device."""
    if isinstance(values, torch.Tensor):
        host = values.detach().flatten().to("cpu", torch.float64)
    else:
        host = torch.tensor(list(values), dtype=torch.float64)
    group = _host_group()
    if group is not None:
        dist.all_reduce(host, op=_OPS[op], group=group)
    return host.tolist()


def barrier() -> None:
    group = _host_group()
    if group is not None:
        dist.barrier(group=group)
