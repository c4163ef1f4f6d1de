"""Per-source training signals: how much of each source the model has seen, against its configured
weight, and the training loss of each source.

The per-source loss comes from per-token losses (`Transformer.forward(..., reduction="none")`) on log
steps only: each micro-batch adds its rows' loss sums and token counts to a small device tensor,
indexed by the source of each row, which the metrics callback reduces over the ranks together with the
training loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def add_source_sums(sums: torch.Tensor | None, token_losses: torch.Tensor, sources: torch.Tensor,
                    num_sources: int) -> torch.Tensor:
    """`sums` ([num_sources, 2] float64: loss summed over tokens, tokens; None: zeros) plus the rows of
    `token_losses` ([B, T], every target a real token), row b counted for source `sources[b]`. Stays on
    the losses' device; the host copy of `sources` is queued without waiting."""
    rows = sources.to(token_losses.device, non_blocking=True)
    if sums is None:
        sums = torch.zeros(num_sources, 2, dtype=torch.float64, device=token_losses.device)
    sums[:, 0].index_add_(0, rows, token_losses.detach().sum(1).double())
    sums[:, 1].index_add_(0, rows, torch.full(rows.shape, float(token_losses.shape[1]), dtype=torch.float64,
                                              device=token_losses.device))
    return sums


def source_loss_metrics(names: Sequence[str], sums: Sequence[float]) -> dict[str, float]:
    """`train/<source>/loss` from the reduced sums (flattened [source, (loss sum, tokens)]); a source
    without a token in this step has no entry."""
    out = {}
    for i, name in enumerate(names):
        loss_sum, tokens = sums[2 * i], sums[2 * i + 1]
        if tokens:
            out[f"train/{name}/loss"] = loss_sum / tokens
    return out


def source_mix_metrics(tokens: Mapping[str, int], weights: Mapping[str, float]) -> dict[str, float]:
    """`data/<source>/tokens` (consumed so far, all ranks), `data/<source>/share` (of all tokens consumed)
    and `data/<source>/weight` (the configured share) of every source."""
    total_tokens, total_weight = sum(tokens.values()), sum(weights.values())
    out: dict[str, float] = {}
    for name, n in tokens.items():
        out[f"data/{name}/tokens"] = n
        out[f"data/{name}/share"] = n / total_tokens if total_tokens else 0.0
        out[f"data/{name}/weight"] = weights[name] / total_weight
    return out
