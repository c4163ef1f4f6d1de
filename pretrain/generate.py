"""`python -m pretrain.generate --checkpoint DIR --prompt "..."`: sample text from a checkpoint.

Temperature, top-k and top-p (nucleus) sampling with a seed; temperature 0 is greedy decoding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pretrain.model import Transformer
from shard_format.cli import exit_on_user_error


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits [B, V] with everything outside the top-k / the top-p probability mass set to -inf."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.8, top_k: int = 50,
             top_p: float = 0.95, eos_id: int | None = None, generator: torch.Generator | None = None) -> list[int]:
    """New token ids after `prompt_ids` (the model re-reads its window each step: simple, and fine for small models)."""
    model.eval()
    tokens = torch.tensor([prompt_ids], dtype=torch.long)
    window = model.cfg.max_seq_len
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(tokens[:, -window:])[:, -1, :].float()
        if temperature <= 0:
            next_id = int(logits.argmax(dim=-1))
        else:
            probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        if eos_id is not None and next_id == eos_id:
            break
        out.append(next_id)
        tokens = torch.cat([tokens, torch.tensor([[next_id]])], dim=1)
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from tokenizers import Tokenizer

    from pretrain.checkpoint import load_model
    from shard_format import manifest as manifest_lib

    parser = argparse.ArgumentParser(prog="python -m pretrain.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint or a checkpoints folder (its latest)")
    parser.add_argument("--prompt", action="append", help="repeat for several prompts (default: one empty prompt)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = off")
    parser.add_argument("--top-p", type=float, default=0.95, help="1 = off")
    parser.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the one of the shards it trained on)")
    args = parser.parse_args(argv)

    model, _, state = load_model(args.checkpoint)
    manifest = manifest_lib.read(state["data_path"])
    tokenizer_file = args.tokenizer or Path(state["data_path"]) / manifest["tokenizer"]["file"]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    eos_id = manifest["tokenizer"]["eos_id"]
    generator = torch.Generator().manual_seed(args.seed)
    for prompt in args.prompt or [""]:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids or [eos_id]
        for i in range(args.num_samples):
            new = generate(model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p, eos_id, generator)
            print(f"--- sample {i + 1} (step {state['step']}) ---\n{prompt}{tokenizer.decode(new)}\n", flush=True)


if __name__ == "__main__":
    main()
