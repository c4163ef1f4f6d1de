"""A Llama-style decoder-only Transformer in plain PyTorch.

Pre-norm blocks (RMSNorm), rotary position embeddings, grouped-query attention through
`scaled_dot_product_attention`, SwiGLU MLP, no biases. The math (RoPE layout, norm dtype, GQA
head grouping) is the same as Hugging Face's `LlamaForCausalLM`, so `pretrain.export` only renames
weights. Parallelism, activation checkpointing and `torch.compile` are applied by the trainer from
outside (each block is one entry of `Transformer.layers`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import ModelConfig

IGNORE_INDEX = -100

# `enable_gqa` appeared in torch 2.5; older versions get the kv heads repeated explicitly.
_SDPA_ENABLE_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def rope_cos_sin(head_dim: int, max_seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [max_seq_len, head_dim], in fp32, laid out as Hugging Face Llama does
    (frequencies repeated over the two halves of the head dim, for `rotate_half`)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float, device=device), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, head_dim] by the tables cos, sin [T, head_dim]."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalized in fp32, scaled in the input dtype: bit-for-bit what HF Llama does
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # query head h reads kv head h // (n_heads // n_kv_heads), as in HF's repeat_kv
        if self.n_kv_heads == self.n_heads:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif _SDPA_ENABLE_GQA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            n_rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # derived from the config, never saved: a state dict holds weights only
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re)initialize every parameter and the RoPE tables, on the device they are on.

        `generator` (on the parameters' device) makes the weights a function of its seed alone, however
        the model was built; None draws from torch's default generator. For a model built on the meta
        device: `model.to_empty(device=...)`, then call this.
        """
        cfg = self.cfg
        self.rope_cos, self.rope_sin = rope_cos_sin(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta,
                                                    device=self.rope_cos.device)
        for name, param in self.named_parameters():  # a tied head is listed once, as tok_embeddings
            self.init_parameter(name, param, generator)

    @torch.no_grad()
    def init_parameter(self, name: str, param: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialize one parameter by its name: one at a time, a trainer can gather each ZeRO-3
        partition (`deepspeed.zero.GatheredParameters`) around this call."""
        if name.endswith("norm.weight"):
            nn.init.ones_(param)
        elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            # residual-stream writers scaled down so the residual variance does not grow with depth (GPT-2, OLMo)
            nn.init.normal_(param, std=self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers), generator=generator)
        else:
            nn.init.normal_(param, std=self.cfg.init_std, generator=generator)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab_size]; with targets [B, T], the mean cross-entropy
        (fp32) over the positions whose target is not IGNORE_INDEX (-100) instead, or with
        reduction="none" each position's cross-entropy [B, T] (0 where the target is ignored)."""
        T = tokens.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin)
        logits = self.output(self.norm(h))
        if targets is None:
            return logits
        return cross_entropy(logits, targets, reduction)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """reduction "mean" (a scalar) or "none" (the shape of `targets`)."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    losses = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX,
                             reduction=reduction)
    return losses if reduction == "mean" else losses.view(targets.shape)


def num_params(model: nn.Module, exclude_embeddings: bool = False) -> int:
    """Parameters of `model`, shared ones counted once (also for a meta-device or ZeRO-3 model).

    exclude_embeddings drops the token embedding table (a lookup, no FLOPs); the output head is
    always counted, so with tied embeddings the shared matrix stays in, as the head.
    """
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    if exclude_embeddings and isinstance(model, Transformer) and not model.cfg.tie_embeddings:
        weight = model.tok_embeddings.weight
        total -= getattr(weight, "ds_numel", weight.numel())
    return total


def num_params_from_config(cfg: ModelConfig, exclude_embeddings: bool = False) -> int:
    """What `num_params(Transformer(cfg), exclude_embeddings)` returns, without building the model."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = cfg.dim * q_dim + 2 * cfg.dim * kv_dim + q_dim * cfg.dim
    block = attention + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    total = cfg.n_layers * block + cfg.dim + cfg.vocab_size * cfg.dim  # blocks, final norm, head
    if not cfg.tie_embeddings and not exclude_embeddings:
        total += cfg.vocab_size * cfg.dim
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at sequence length seq_len:

        6 * N + 12 * n_layers * dim * seq_len

    N is the non-embedding parameter count including the output head (`num_params_from_config(cfg,
    exclude_embeddings=True)`): 2 FLOPs per weight per token forward, 4 backward. The second term is
    the attention scores QK^T and their product with V, 2 * 2 * n_layers * seq_len * dim forward,
    times 3 for the backward, over the full T x T matrix (PaLM's and Chinchilla's convention: no
    discount for the causal mask). Recomputation from activation checkpointing is not counted, so
    this gives model FLOPs utilization (MFU), not hardware FLOPs.
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len: must be positive, got {seq_len}")
    n = num_params_from_config(cfg, exclude_embeddings=True)
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.dim * seq_len
