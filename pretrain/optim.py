"""The optimizer (AdamW with weight-decay groups) and its schedule (linear warmup, then cosine decay).

Which AdamW depends on where its states live:
- on the device (ZeRO 0-3): torch's AdamW, which compiles nothing and resumes bit-exactly. DeepSpeed's
  ZeRO optimizers (stages 1-3) and its bf16 optimizer wrap it and skip a step whose gradient norm is
  not finite; with ZeRO-0 in fp32 the engine calls it directly, so `SkippingAdamW` does that check;
- in CPU memory (`deepspeed.offload_optimizer=cpu`): DeepSpeed's vectorised `DeepSpeedCPUAdam` (built
  on first use, cached under TORCH_EXTENSIONS_DIR). It runs an OpenMP loop on as many threads as
  `threads_per_rank` gives torch (`torch.set_num_threads`): set it to the node's cores / ranks per node.
"""

from __future__ import annotations

import math

import torch

from pretrain.config import DeepSpeedSection, OptimSection


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (linear and embedding weights) decay; vectors (norm gains, biases) do not. A ZeRO-3
    partitioned parameter keeps its shape in `ds_shape` (its data is a flat partition)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if len(getattr(param, "ds_shape", param.shape)) >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SkippingAdamW(torch.optim.AdamW):
    """torch's AdamW that leaves the parameters and its states untouched when a gradient is not finite.
    It says so in `overflow`, which DeepSpeed's engine reads after the step: it then counts the step in
    `engine.skipped_steps` and does not advance the learning-rate schedule."""

    overflow = False

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.overflow = bool(grads) and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        if self.overflow:
            return None
        return super().step(closure)


def build_optimizer(model: torch.nn.Module, cfg: OptimSection, ds: DeepSpeedSection) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if ds.offload_optimizer == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, adamw_mode=True)
    kind = SkippingAdamW if ds.zero_stage == 0 else torch.optim.AdamW
    return kind(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_factor(step: int, cfg: OptimSection, max_steps: int) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, max_steps))
