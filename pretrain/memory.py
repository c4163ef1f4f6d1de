"""Memory per rank, estimated from the config alone (nothing is built): parameters, gradients and
optimizer states as ZeRO partitions them, and activations of one micro-batch.

Bytes per parameter, with P parameters, N data-parallel ranks, w = 2 (bf16) or 4 (fp32):

| ZeRO | parameters | gradients                         | optimizer states (fp32 master, m, v) |
|------|------------|-----------------------------------|--------------------------------------|
| 0    | w P        | w P (+ 4 P fp32 copy in bf16)     | 8 P (+ 4 P master in bf16)           |
| 1    | w P        | w P (+ 4 P / N fp32 in bf16)      | 12 P / N                             |
| 2    | w P        | (w + 4 in bf16) P / N             | 12 P / N                             |
| 3    | w P / N + the gathered working set (4 bytes x the largest module's parameters, as DeepSpeed counts it) | (w + 4 in bf16) P / N | 12 P / N |

With bf16 and ZeRO-2 this is DeepSpeed's own estimate (`estimate_zero2_model_states_mem_needs`:
2 P + 18 P / N); with ZeRO-3 it counts the 16-bit parameter partition that DeepSpeed's estimator
leaves out. `offload_optimizer=cpu` moves the optimizer states and fp32 gradients to host memory,
`offload_param=cpu` the parameter partition. Activations: per layer and token, the tensors the
backward pass keeps (the block's norms in fp32, q/k/v before and after RoPE, the attention output
with a fused kernel that keeps no score matrix, SwiGLU's four ffn-wide tensors), all layers' without
activation checkpointing, one layer's plus every block's input with it; plus the logits (in the
activation dtype, their fp32 copy and its gradient). It leaves out the CUDA context, allocator
fragmentation and communication buffers: keep some headroom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from pretrain.config import ModelConfig, TrainConfig
from pretrain.model import num_params_from_config

GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank."""

    parameters: float
    gradients: float
    optimizer_states: float
    activations: float
    host: float  # offloaded states in CPU memory, per rank

    @property
    def device_total(self) -> float:
        return self.parameters + self.gradients + self.optimizer_states + self.activations


def _largest_layer(m: ModelConfig) -> int:
    """Parameters of the largest single module (ZeRO-3 gathers a module's parameters together)."""
    return max(m.vocab_size * m.dim, m.dim * m.ffn_dim, m.dim * m.n_heads * m.head_dim)


def activation_bytes(m: ModelConfig, micro_batch: int, seq_len: int, width: int, checkpointing: bool) -> float:
    kv_dim = m.n_kv_heads * m.head_dim
    per_layer_token = width * (9 * m.dim + 6 * kv_dim + 4 * m.ffn_dim) + 8 * m.dim
    stored = per_layer_token + (m.n_layers - 1) * width * m.dim if checkpointing else m.n_layers * per_layer_token
    logits = m.vocab_size * (width + 4 + 4)
    return float(micro_batch * seq_len * (stored + logits))


def estimate(m: ModelConfig, cfg: TrainConfig, world_size: int, micro_batch: int, bf16: bool) -> MemoryEstimate:
    stage, ds = cfg.deepspeed.zero_stage, cfg.deepspeed
    P, N, w = float(num_params_from_config(m)), float(world_size), 2 if bf16 else 4
    fp32_grads = 4 if bf16 else 0
    if stage == 0:
        params, grads, optim = w * P, (w + fp32_grads) * P, (8 + fp32_grads) * P
    elif stage == 1:
        params, grads, optim = w * P, w * P + fp32_grads * P / N, 12 * P / N
    else:
        params = w * P if stage == 2 else w * P / N + 4 * _largest_layer(m)
        grads, optim = (w + fp32_grads) * P / N, 12 * P / N
    host = 0.0
    if ds.offload_optimizer == "cpu":
        host += optim + fp32_grads * P / N
        grads -= fp32_grads * P / N
        optim = 0.0
    if ds.offload_param == "cpu":
        host += w * P / N
        params -= w * P / N
    acts = activation_bytes(m, micro_batch, cfg.data.seq_len, w, cfg.activation_checkpointing)
    return MemoryEstimate(params, grads, optim, acts, host)


def report(est: MemoryEstimate, m: ModelConfig, cfg: TrainConfig, world_size: int, micro_batch: int, bf16: bool,
           device_gib: float | None) -> str:
    ds = cfg.deepspeed
    offload = [f"{what} offloaded to cpu" for what, dev in (("optimizer", ds.offload_optimizer),
                                                              ("parameters", ds.offload_param)) if dev == "cpu"]
    n = num_params_from_config(m)
    count = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    head = (f"memory per rank: {count} parameters, ZeRO-{ds.zero_stage}, "
            f"{'bf16' if bf16 else 'fp32'}, {world_size} rank{'s' * (world_size != 1)}, micro-batch {micro_batch} x "
            f"{cfg.data.seq_len} tokens" + (", activation checkpointing" if cfg.activation_checkpointing else "")
            + "".join(f", {o}" for o in offload))
    rows = [("parameters", est.parameters), ("gradients", est.gradients), ("optimizer states", est.optimizer_states),
            ("activations (estimate)", est.activations), ("total on the device", est.device_total)]
    lines = [head] + [f"  {name:<24}{value / GIB:>10.2f} GiB" for name, value in rows]
    if est.host:
        lines.append(f"  {'host memory (offload)':<24}{est.host / GIB:>10.2f} GiB")
    if device_gib:
        verdict = "fits" if fits(est, device_gib) else "does NOT fit"
        lines.append(f"  device memory {device_gib:.1f} GiB: {verdict}")
    return "\n".join(lines)


def fits(est: MemoryEstimate, device_gib: float) -> bool:
    return est.device_total <= device_gib * GIB


def alternatives(m: ModelConfig, cfg: TrainConfig, world_size: int, micro_batch: int, bf16: bool,
                 device_gib: float) -> list[str]:
    """Overrides that would make the estimate fit: each one that does on its own or, when none does,
    the shortest run of them (in the order listed) that does together."""
    Setup = tuple[TrainConfig, int, int]  # config, ranks, micro-batch

    def with_ds(c: TrainConfig, **changes) -> TrainConfig:
        return dataclasses.replace(c, deepspeed=dataclasses.replace(c.deepspeed, **changes))

    changes: list[tuple[str, Callable[[Setup], Setup]]] = []
    if not cfg.activation_checkpointing:
        changes.append(("activation_checkpointing=true",
                        lambda s: (dataclasses.replace(s[0], activation_checkpointing=True), s[1], s[2])))
    if micro_batch > 1:
        changes.append(("batch.micro_batch_size=1 (grad_accum_steps grows with batch.global_batch_size kept)",
                        lambda s: (s[0], s[1], 1)))
    if cfg.deepspeed.zero_stage < 3:
        changes.append(("deepspeed=zero3", lambda s: (with_ds(s[0], zero_stage=3), s[1], s[2])))
    if cfg.deepspeed.offload_optimizer == "none":
        changes.append(("deepspeed.offload_optimizer=cpu", lambda s: (
            with_ds(s[0], zero_stage=max(s[0].deepspeed.zero_stage, 1), offload_optimizer="cpu"), s[1], s[2])))
    changes.append((f"{8 * world_size} ranks (model states are partitioned across ranks)",
                    lambda s: (s[0], 8 * world_size, s[2])))

    def fits_with(setup: Setup) -> bool:
        return fits(estimate(m, setup[0], setup[1], setup[2], bf16), device_gib)

    base: Setup = (cfg, world_size, micro_batch)
    singles = [text for text, change in changes if fits_with(change(base))]
    if singles:
        return singles
    setup, chosen = base, []
    for text, change in changes:
        setup = change(setup)
        chosen.append(text)
        if fits_with(setup):
            return [" together with ".join(chosen)]
    return []


def plan(m: ModelConfig, cfg: TrainConfig, world_size: int, micro_batch: int, bf16: bool,
         device_gib: float | None) -> tuple[str, str | None]:
    """(the printed estimate, the refusal message when it does not fit the device, else None)."""
    est = estimate(m, cfg, world_size, micro_batch, bf16)
    text = report(est, m, cfg, world_size, micro_batch, bf16, device_gib)
    if not device_gib or fits(est, device_gib):
        return text, None
    options = alternatives(m, cfg, world_size, micro_batch, bf16, device_gib)
    problem = (f"memory.device_gib: the estimate, {est.device_total / GIB:.1f} GiB per rank, exceeds the device's "
               f"{device_gib:.1f} GiB. " + ("It would fit with " + "; or ".join(options) if options else
                                           "No change of ZeRO stage, offload, micro-batch or rank count tried fits: "
                                           "use a smaller model")
               + " (memory.check=false starts anyway)")
    return text + "\n  would fit with: " + ("; or ".join(options) or "none of the changes tried"), problem


def check_before_start(m: ModelConfig, cfg: TrainConfig, world_size: int, micro_batch: int, local_rank: int,
                       announce: bool) -> None:
    """Print the plan (when `announce`: rank 0) and refuse to start, naming what would fit, when it exceeds
    the device's memory (`memory.device_gib`, else the GPU's; on CPUs only a given one is checked). With
    estimate_only the plan is for GPUs: precision auto counts as bf16."""
    import torch

    from pretrain.config import ConfigError
    from pretrain.engine import uses_bf16

    on_gpu = torch.cuda.is_available()
    bf16 = uses_bf16(cfg.deepspeed, on_cpu=not (on_gpu or cfg.estimate_only))
    device_gib = cfg.memory.device_gib or (
        torch.cuda.get_device_properties(local_rank).total_memory / GIB if on_gpu and not cfg.estimate_only else None)
    text, problem = plan(m, cfg, world_size, micro_batch, bf16, device_gib)
    if announce:
        print(text, flush=True)
    if problem and cfg.memory.check and not cfg.estimate_only:
        raise ConfigError(problem)
