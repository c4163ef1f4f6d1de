"""Everything applied to the model from outside it: where and how it is built (on the device, or
partitioned across ranks under ZeRO-3), activation checkpointing, the DeepSpeed engine (ZeRO,
precision, offload) and its JSON, generated from the typed config (`deepspeed_config`: no
ds_config.json, so no setting lives in two places), torch.compile, and the device settings (TF32,
the attention kernel). The model file stays plain PyTorch."""

from __future__ import annotations

import copy
import datetime
import functools
import os
import sys
import warnings
from typing import Any, Optional

import torch
from torch.utils.checkpoint import checkpoint

from pretrain import collectives
from pretrain.config import DeepSpeedSection, ModelConfig, TrainConfig, derive_batch, validate_extra
from pretrain.distributed import DistEnv
from pretrain.model import Transformer
from pretrain.optim import build_optimizer, build_scheduler


def quiet_deepspeed_start() -> None:
    """Call before DeepSpeed is imported. Without a GPU, name its CPU accelerator ourselves: left to detect
    it, DeepSpeed warns on every rank that it found none (rank 0 prints the device it runs on). Drop the
    FutureWarning of torch's `all_gather_into_tensor`, which DeepSpeed's ZeRO calls: a user cannot act
    on it. Every other warning, ours included, shows as Python shows it (once per place)."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)


def _on_cpu() -> bool:
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        return True
    return not torch.cuda.is_available()


def uses_bf16(ds: DeepSpeedSection, on_cpu: bool) -> bool:
    """precision auto: bf16 on GPUs, fp32 on CPUs."""
    return ds.precision == "bf16" or (ds.precision == "auto" and not on_cpu)


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def bucket_size(model: ModelConfig) -> int:
    """ZeRO communication bucket (elements): about two layers' parameters, within [5e6, 5e8]."""
    return int(min(5e8, max(5e6, 24 * model.dim * model.dim)))


def deepspeed_config(cfg: TrainConfig, world_size: int, *, load_universal: bool = False,
                     on_cpu: Optional[bool] = None) -> dict[str, Any]:
    """DeepSpeed's JSON, generated from `cfg` (the only source of truth), then `deepspeed.extra` merged in.

    No "optimizer"/"scheduler": the trainer passes its own (pretrain/optim.py).
    `load_universal`: load a universal checkpoint (resuming on another world size).
    `on_cpu`: null = detect (no CUDA device, or DS_ACCELERATOR=cpu); on CPU nothing is pinned and
    communication is not overlapped.
    """
    sizes = derive_batch(cfg.batch, world_size)
    ds = cfg.deepspeed
    if on_cpu is None:
        on_cpu = _on_cpu()
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 1:
        bucket = bucket_size(cfg.model)
        zero.update(contiguous_gradients=True, overlap_comm=not on_cpu, reduce_bucket_size=bucket)
        if ds.zero_stage <= 2:
            zero.update(allgather_partitions=True, allgather_bucket_size=bucket, reduce_scatter=True)
        else:
            zero.update(stage3_prefetch_bucket_size=bucket,
                        stage3_param_persistence_threshold=10 * cfg.model.dim,
                        stage3_gather_16bit_weights_on_model_save=False)
        if ds.offload_optimizer != "none":
            zero["offload_optimizer"] = {"device": ds.offload_optimizer, "pin_memory": not on_cpu}
        if ds.offload_param != "none":
            zero["offload_param"] = {"device": ds.offload_param, "pin_memory": not on_cpu}
    out: dict[str, Any] = {
        "train_batch_size": sizes.global_batch_size,
        "train_micro_batch_size_per_gpu": sizes.micro_batch_size,
        "gradient_accumulation_steps": sizes.grad_accum_steps,
        "gradient_clipping": float(cfg.optim.grad_clip),
        "zero_optimization": zero,
        "bf16": {"enabled": uses_bf16(ds, on_cpu)},
        "steps_per_print": 10**12,  # the trainer logs
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": bool(load_universal)},
    }
    validate_extra(ds.extra)
    return _deep_merge(out, dict(ds.extra))


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass. Overriding the instance's forward keeps
    parameter names (and so checkpoints and exports) unchanged."""
    for block in model.layers:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def init_distributed(env: DistEnv, timeout_minutes: float = 10.0) -> torch.device:
    """The default process group (NCCL on GPUs, gloo on CPUs), our host-side group beside it, and the
    device settings; returns this rank's device. A collective of either group that waits longer than
    `timeout_minutes` (a rank died or hangs) raises, instead of DeepSpeed's default 30 minutes."""
    import deepspeed

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # DeepSpeed's CPU accelerator compiles a shared-memory all-reduce kernel at start-up (60-100 s);
        # it serves only inference, and training over gloo does not need it
        import deepspeed.comm.torch  # noqa: F401

        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda *a, **k: None
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        # fp32 matmuls (fp32 runs, and the fp32 parts of bf16 ones) on TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    timeout = datetime.timedelta(minutes=timeout_minutes)
    # the groups DeepSpeed makes itself (its data-parallel group...) take torch's default timeout, the module
    # globals torch.distributed.distributed_c10d.default_pg_timeout / default_pg_nccl_timeout, read when a
    # group is created: set them too, so that no collective of the run waits longer
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = c10d.default_pg_nccl_timeout = timeout
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl", auto_mpi_discovery=False, timeout=timeout)
    collectives.init(timeout)
    return device


def build_model(model_cfg: ModelConfig, ds_config: dict, seed: int, device: torch.device) -> Transformer:
    """The model with its initial weights, which depend on `seed` (and the device type) only.

    ZeRO-3 builds it partitioned (`deepspeed.zero.Init`): each parameter is split across the ranks as
    soon as its module exists, so no rank ever holds the whole model (see `_init_partitions`).
    Otherwise the model is built on the meta device and materialised on `device`, with no throw-away
    default initialisation."""
    generator = torch.Generator(device=device).manual_seed(seed)
    if ds_config["zero_optimization"]["stage"] != 3:
        with torch.device("meta"):
            model = Transformer(model_cfg)
        model.to_empty(device=device)
        model.init_weights(generator)
        return model

    import deepspeed

    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = Transformer(model_cfg)
    _init_partitions(model, generator)
    return model


@torch.no_grad()
def _init_partitions(model: Transformer, generator: torch.Generator) -> None:
    """Every rank draws each parameter whole, in the order, dtype and device of the unpartitioned build,
    and keeps its own partition of it: the same weights as that build, at most one whole parameter in
    memory at a time, no communication. The partition layout is DeepSpeed's
    (`deepspeed.runtime.zero.partition_parameters.Init._partition_param`): `param.ds_tensor` holds the
    rank's contiguous slice of the flattened parameter, `ds_tensor.ds_numel` long, zero-padded at the end."""
    import torch.distributed as dist

    model.init_weights(generator=None)  # the RoPE tables (the parameters are partitioned: a no-op for them)
    for name, param in model.named_parameters():
        full = torch.empty(param.ds_shape, dtype=torch.float32, device=generator.device)
        model.init_parameter(name, full, generator)
        part = param.ds_tensor
        start = dist.get_rank(group=param.ds_process_group) * part.ds_numel
        mine = full.view(-1)[start:start + part.ds_numel]
        part[:mine.numel()].copy_(mine)  # fp32 drawn, rounded to the partition's dtype as DeepSpeed rounds


def build_engine(model: torch.nn.Module, cfg: TrainConfig, ds_config: dict):
    import deepspeed

    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    optimizer = build_optimizer(model, cfg.optim, cfg.deepspeed)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.max_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if cfg.checkpoint.async_save:
        from pretrain.checkpoint_writer import BackgroundWriter

        engine.checkpoint_engine = BackgroundWriter()
    if cfg.compile:
        engine.compile()
    return engine


def attention_backend(model_cfg: ModelConfig, seq_len: int, dtype: torch.dtype, device: torch.device) -> str:
    """The kernel `scaled_dot_product_attention` picks for the model's causal, grouped-query attention
    at this dtype and device (FLASH_ATTENTION, EFFICIENT_ATTENTION, CUDNN_ATTENTION or MATH)."""
    from torch.nn.attention import SDPBackend

    q = torch.empty(1, model_cfg.n_heads, seq_len, model_cfg.head_dim, dtype=dtype, device=device)
    kv = torch.empty(1, model_cfg.n_kv_heads, seq_len, model_cfg.head_dim, dtype=dtype, device=device)
    gqa = model_cfg.n_kv_heads != model_cfg.n_heads
    # torch._fused_sdp_choice: the dispatcher's own choice, the one public SDPA makes for these inputs
    choice = torch._fused_sdp_choice(q, kv, kv, is_causal=True, enable_gqa=gqa)
    return SDPBackend(choice).name

