"""Validation loss and perplexity, overall and per source.

In training it runs as a callback on every rank; `python -m pretrain.evaluate --checkpoint DIR` runs
it on a saved checkpoint in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from pretrain import collectives
from pretrain.data import ValidationBatches, validation_batches
from shard_format.cli import exit_on_user_error


def source_batches(data_path: str, sources: list[str], seq_len: int, batch_size: int, dp_rank: int = 0,
                   dp_world: int = 1, manifest: dict | None = None) -> dict[str, ValidationBatches]:
    """Each source's validation batches, built once (they are re-iterable)."""
    return {source: validation_batches(data_path, "val", seq_len, batch_size, source, dp_rank, dp_world, manifest)
            for source in sources}


@torch.no_grad()
def evaluate(forward, batches: dict[str, ValidationBatches], max_batches: int,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """`forward(inputs, targets) -> mean loss` over each source's batches, sent to `device`. Every rank
    runs the same number of batches (ZeRO-3 gathers parameters collectively in each forward), so a
    source may lose its last partial round. Losses are summed on the device and reduced once, at the end."""
    device = torch.device(device)
    sources = list(batches)
    sums = torch.zeros(len(sources), 2, dtype=torch.float64, device=device)  # per source: loss * tokens, tokens
    for row, source in enumerate(sources):
        n = min(batches[source].fewest_batches_of_any_rank, max_batches or len(batches[source]))
        for i, (inputs, targets) in enumerate(batches[source]):
            if i >= n:
                break
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            loss = forward(inputs, targets)
            sums[row, 0] += loss.detach().double() * targets.numel()
            sums[row, 1] += targets.numel()
    totals = collectives.all_reduce(sums)
    out: dict[str, float] = {}
    total_loss = total_tokens = 0.0
    for row, source in enumerate(sources):
        loss_sum, tokens = totals[2 * row], totals[2 * row + 1]
        if tokens:
            out[f"val/{source}/loss"] = loss_sum / tokens
            out[f"val/{source}/ppl"] = math.exp(min(loss_sum / tokens, 50.0))
        total_loss, total_tokens = total_loss + loss_sum, total_tokens + tokens
    if total_tokens:
        out["val/loss"] = total_loss / total_tokens
        out["val/ppl"] = math.exp(min(total_loss / total_tokens, 50.0))
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from pretrain.checkpoint import load_model
    from shard_format import manifest as manifest_lib

    parser = argparse.ArgumentParser(description="Validation loss and perplexity of a checkpoint, overall and per source")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder (step_XXXXXXXX) or the checkpoints folder (latest)")
    parser.add_argument("--data", help="shard folder with manifest.json (default: the one the run trained on)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=0, help="per source; 0 = all")
    args = parser.parse_args(argv)
    model, model_cfg, state = load_model(args.checkpoint)
    data_path = args.data or state["data_path"]
    manifest = manifest_lib.read(data_path)
    sources = sorted(manifest["splits"]["val"]["sources"])
    model.eval()
    batches = source_batches(data_path, sources, state["seq_len"], args.batch_size, manifest=manifest)
    metrics = evaluate(model, batches, args.max_batches)
    if not metrics:
        sys.exit(f"error: {data_path} has no validation samples")
    print(json.dumps({"step": state["step"], **metrics}, indent=2))


if __name__ == "__main__":
    main()
