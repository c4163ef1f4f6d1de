"""One rank of tests/test_zero3.py, launched by torchrun: build a model partitioned under ZeRO-3 with
the trainer's own functions, report this rank's peak RSS during construction and the bytes it holds;
with --train, also compare the gathered weights with the unpartitioned build of the same seed and
train one step.

    torchrun --nproc_per_node 2 -m tests.zero3_worker --out DIR --dim 1024 --layers 8 ... [--train]
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import torch


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    for name in ("dim", "layers", "heads", "kv-heads", "ffn", "vocab"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()

    import deepspeed

    from pretrain import collectives, distributed
    from pretrain.config import compose
    from pretrain.engine import build_engine, build_model, deepspeed_config, init_distributed
    from pretrain.model import num_params

    cfg = compose(["deepspeed=zero3", "deepspeed.precision=fp32", "batch.micro_batch_size=1", "model.max_seq_len=32",
                   f"model.vocab_size={args.vocab}", f"model.dim={args.dim}", f"model.n_layers={args.layers}",
                   f"model.n_heads={args.heads}", f"model.n_kv_heads={args.kv_heads}", f"model.ffn_hidden_dim={args.ffn}",
                   "optim.warmup_steps=1"])
    env = distributed.detect()
    distributed.export_env(env)
    torch.set_num_threads(1)
    device = init_distributed(env)
    ds_config = deepspeed_config(cfg, env.world_size)
    model_cfg = cfg.model.with_vocab().validate()

    before = peak_rss_bytes()
    model = build_model(model_cfg, ds_config, cfg.seed, device)
    result = {"rss_before": before, "rss_peak": peak_rss_bytes(), "full_bytes": 4 * num_params(model),
              "local_bytes": sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in model.parameters())}
    if args.train:
        plain_config = {**ds_config, "zero_optimization": {"stage": 2}}
        reference = build_model(model_cfg, plain_config, cfg.seed, device).state_dict() if env.rank == 0 else {}
        same = True
        for name, param in model.named_parameters():
            with deepspeed.zero.GatheredParameters([param]):
                if env.rank == 0:
                    same = same and torch.equal(param.data, reference[name])
        del reference
        engine = build_engine(model, cfg, ds_config)
        tokens = torch.randint(0, args.vocab, (1, 33), generator=torch.Generator().manual_seed(env.rank))
        loss = engine(tokens[:, :-1], tokens[:, 1:])
        engine.backward(loss)
        engine.step()
        result.update(same_weights=same if env.rank == 0 else None, loss=float(loss), steps=engine.global_steps)
        engine.destroy()
    (args.out / f"rank{env.rank}.json").write_text(json.dumps(result))
    collectives.destroy()


if __name__ == "__main__":
    main()
