"""Everything applied to the model from outside it: activation checkpointing, the DeepSpeed engine
(ZeRO, precision, offload), torch.compile. The model file stays plain PyTorch."""

from __future__ import annotations

import functools
import sys

import torch
from torch.utils.checkpoint import checkpoint

from pretrain.config import TrainConfig, deepspeed_config
from pretrain.distributed import DistEnv
from pretrain.optim import build_optimizer, build_scheduler


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass. Overriding the instance's forward keeps
    parameter names (and so checkpoints and exports) unchanged."""
    for block in model.layers:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def init_distributed(env: DistEnv) -> None:
    import deepspeed

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # DeepSpeed's CPU accelerator compiles a shared-memory all-reduce kernel at start-up (60-100 s);
        # it serves only inference, and training over gloo does not need it
        import deepspeed.comm.torch  # noqa: F401

        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda *a, **k: None
    else:
        torch.cuda.set_device(env.local_rank)
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl", auto_mpi_discovery=False)


def build_engine(model: torch.nn.Module, cfg: TrainConfig, world_size: int, load_universal: bool):
    import deepspeed

    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.max_steps)
    ds_config = deepspeed_config(cfg, world_size, load_universal=load_universal)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if cfg.compile:
        engine.compile()
    return engine, ds_config
