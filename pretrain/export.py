"""Export our Transformer as a Hugging Face `LlamaForCausalLM` folder.

The model uses HF Llama's RoPE layout (rotate_half), norm and GQA head grouping, so export is a
rename of the weights, no permutation:

    python -m pretrain.export --state-dict model.pt --model-config model.json --tokenizer DIR --out DIR

writes config.json, generation_config.json, model.safetensors and the tokenizer files, loadable
with `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from pretrain.config import ModelConfig
from pretrain.model import Transformer
from shard_format.atomic import write_text_atomic
from shard_format.cli import exit_on_user_error
from shard_format.errors import InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# wrappers that activation checkpointing, torch.compile, FSDP or DeepSpeed put into parameter names
_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _name_map(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Our parameter name -> (HF name, shape)."""
    q_dim, kv_dim, ffn = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    names = {"tok_embeddings.weight": ("model.embed_tokens.weight", (cfg.vocab_size, cfg.dim))}
    for i in range(cfg.n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        names |= {
            ours + "attention.wq.weight": (hf + "self_attn.q_proj.weight", (q_dim, cfg.dim)),
            ours + "attention.wk.weight": (hf + "self_attn.k_proj.weight", (kv_dim, cfg.dim)),
            ours + "attention.wv.weight": (hf + "self_attn.v_proj.weight", (kv_dim, cfg.dim)),
            ours + "attention.wo.weight": (hf + "self_attn.o_proj.weight", (cfg.dim, q_dim)),
            ours + "feed_forward.w1.weight": (hf + "mlp.gate_proj.weight", (ffn, cfg.dim)),
            ours + "feed_forward.w3.weight": (hf + "mlp.up_proj.weight", (ffn, cfg.dim)),
            ours + "feed_forward.w2.weight": (hf + "mlp.down_proj.weight", (cfg.dim, ffn)),
            ours + "attention_norm.weight": (hf + "input_layernorm.weight", (cfg.dim,)),
            ours + "ffn_norm.weight": (hf + "post_attention_layernorm.weight", (cfg.dim,)),
        }
    names["norm.weight"] = ("model.norm.weight", (cfg.dim,))
    if not cfg.tie_embeddings:
        names["output.weight"] = ("lm_head.weight", (cfg.vocab_size, cfg.dim))
    return names


def _clean_key(key: str) -> str:
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key.removeprefix("module.")


def state_dict_to_hf(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our model's state dict (e.g. a consolidated fp32 one) -> HF Llama names, on the CPU.

    Missing, unexpected or wrongly shaped weights are errors naming them. With tied embeddings the
    output head is left out (HF ties lm_head to embed_tokens from tie_word_embeddings).
    """
    cfg.validate()
    names = _name_map(cfg)
    state = {_clean_key(k): v for k, v in state_dict.items()}
    for buffer in ("rope_cos", "rope_sin"):  # non-persistent, but a hand-made dict may hold them
        state.pop(buffer, None)
    if cfg.tie_embeddings:
        head = state.pop("output.weight", None)
        embed = state.get("tok_embeddings.weight")
        if head is not None and embed is not None and head.data_ptr() != embed.data_ptr() and not torch.equal(head, embed):
            raise ValueError("output.weight differs from tok_embeddings.weight but model.tie_embeddings is true")
    missing = [k for k in names if k not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        raise ValueError(f"state dict does not match the model config: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    hf = {}
    for key, (hf_key, shape) in names.items():
        tensor = state[key].detach()
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{key}: shape {tuple(tensor.shape)}, the model config needs {shape}")
        tensor = tensor.to("cpu", dtype or tensor.dtype).contiguous()
        # safetensors refuses tensors that share storage (views into a flat ZeRO buffer)
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        hf[hf_key] = tensor
    return hf


def _special_token_ids(tokenizer_dir: Path, cfg: ModelConfig) -> tuple[int | None, int | None]:
    """(bos id, eos id) from the tokenizer's tokenizer_config.json, looked up in its vocabulary."""
    from tokenizers import Tokenizer

    tokenizer_file = tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise InputError(f"--tokenizer: no tokenizer.json in {tokenizer_dir}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ValueError(f"model.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's vocabulary "
                         f"({tokenizer.get_vocab_size()} tokens in {tokenizer_file})")
    config_file = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    ids = []
    for name in ("bos_token", "eos_token"):
        token = config.get(name)
        if isinstance(token, dict):  # {"content": "<eos>", ...}, an AddedToken
            token = token.get("content")
        ids.append(tokenizer.token_to_id(token) if isinstance(token, str) else None)
    return ids[0], ids[1]


def _llama_config(cfg: ModelConfig, bos_token_id: int | None, eos_token_id: int | None, dtype: torch.dtype):
    from transformers import LlamaConfig

    return LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
        dtype=str(dtype).removeprefix("torch."),
    )


def export_state_dict_hf(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, tokenizer_dir: Path | None,
                         out_dir: Path, eos_token_id: int | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a LlamaForCausalLM folder from our model's state dict; returns out_dir.

    bos/eos ids come from the tokenizer's config (the data pipeline uses its EOS as BOS too);
    `eos_token_id` overrides the eos id. dtype None keeps the weights' dtype.
    """
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    weights = state_dict_to_hf(state_dict, cfg, dtype)
    saved_dtype = weights["model.embed_tokens.weight"].dtype
    bos_id = None
    if tokenizer_dir is not None:
        bos_id, eos_from_tokenizer = _special_token_ids(Path(tokenizer_dir), cfg)
        eos_token_id = eos_from_tokenizer if eos_token_id is None else eos_token_id
    for name, token_id in (("bos_token_id", bos_id), ("eos_token_id", eos_token_id)):
        if token_id is not None and not 0 <= token_id < cfg.vocab_size:
            raise ValueError(f"{name}: {token_id} is outside the vocabulary (model.vocab_size={cfg.vocab_size})")

    out_dir.mkdir(parents=True, exist_ok=True)
    _llama_config(cfg, bos_id, eos_token_id, saved_dtype).save_pretrained(out_dir)
    # transformers < 5 and other readers (vLLM, llama.cpp) look for these two top-level keys
    config = json.loads((out_dir / "config.json").read_text())
    config["rope_theta"] = float(cfg.rope_theta)
    config["torch_dtype"] = config["dtype"]
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id).save_pretrained(out_dir)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, out_dir / name)
    return out_dir


def export_hf(model: Transformer, cfg: ModelConfig, tokenizer_dir: Path | None, out_dir: Path,
              eos_token_id: int | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write `model` as a LlamaForCausalLM folder (see export_state_dict_hf); returns out_dir."""
    if getattr(model, "cfg", cfg) != cfg:
        raise ValueError(f"cfg {cfg} differs from the model's own config {model.cfg}")
    return export_state_dict_hf(model.state_dict(), cfg, tokenizer_dir, out_dir, eos_token_id, dtype)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path,
                        help="a training checkpoint (step_XXXXXXXX) or a checkpoints folder (its latest)")
    source.add_argument("--state-dict", type=Path, help="torch.save'd state dict of our Transformer (with --model-config)")
    parser.add_argument("--model-config", type=Path, help="our ModelConfig as JSON (with --state-dict)")
    parser.add_argument("--tokenizer", type=Path,
                        help="folder with tokenizer.json (default with --checkpoint: the tokenizer of the shards it trained on)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--eos-token-id", type=int, help="default: the tokenizer's eos_token")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: keep their dtype)")
    args = parser.parse_args(argv)

    tokenizer = args.tokenizer
    if args.checkpoint is not None:
        from pretrain.checkpoint import consolidated_state_dict, read_state, resolve_checkpoint
        from shard_format import manifest as manifest_lib

        path = resolve_checkpoint(args.checkpoint)
        state = read_state(path)
        cfg = ModelConfig.from_dict(state["model_config"])
        state_dict = consolidated_state_dict(path)
        if tokenizer is None:
            manifest = manifest_lib.read(state["data_path"])
            tokenizer = Path(state["data_path"]) / manifest["tokenizer"]["folder"]
    else:
        if args.model_config is None:
            parser.error("--state-dict needs --model-config")
        cfg = ModelConfig.from_dict(json.loads(args.model_config.read_text()))
        state_dict = torch.load(args.state_dict, map_location="cpu", weights_only=True, mmap=True)
    out = export_state_dict_hf(state_dict, cfg, tokenizer, args.out, args.eos_token_id,
                               DTYPES[args.dtype] if args.dtype else None)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
