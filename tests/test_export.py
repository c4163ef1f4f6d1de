import json

import pytest
import torch
from safetensors import safe_open

from data_pipeline.tokenizer import save_hf_tokenizer, train_bpe
from pretrain.export import export_hf, main, state_dict_to_hf
from pretrain.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")

EOS = "<|endoftext|>"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the previous ones.",
    "Rotary embeddings rotate queries and keys by their position.",
    "Grouped-query attention shares each key and value head among several query heads.",
] * 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    tokenizer = train_bpe(SENTENCES, vocab_size=320, min_frequency=1, eos_token=EOS)
    return save_hf_tokenizer(tokenizer, tmp_path_factory.mktemp("tokenizer"), EOS).parent


def tiny_config(**overrides) -> ModelConfig:
    # vocab padded past the tokenizer's, as a trainer does (to a multiple of 64)
    values = dict(vocab_size=384, dim=64, n_layers=2, n_heads=4, n_kv_heads=4, multiple_of=32, max_seq_len=64,
                  rope_theta=50000.0, norm_eps=1e-6)
    return ModelConfig(**{**values, **overrides}).validate()


def build(cfg: ModelConfig) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a swapped norm weight would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


@torch.no_grad()
def greedy(model: Transformer, prompt: torch.Tensor, new_tokens: int, eos_id: int) -> torch.Tensor:
    out = prompt
    for _ in range(new_tokens):
        nxt = model(out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        if nxt.item() == eos_id:
            break
    return out


@pytest.mark.parametrize("variant", ["untied", "tied", "gqa", "gqa_tied"])
def test_export_matches_hugging_face(variant, tokenizer_dir, tmp_path):
    cfg = tiny_config(tie_embeddings="tied" in variant, n_kv_heads=2 if "gqa" in variant else 4)
    model = build(cfg)
    out = export_hf(model, cfg, tokenizer_dir, tmp_path / "hf")

    assert {p.name for p in out.iterdir()} == {"config.json", "generation_config.json", "model.safetensors",
                                               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_key_value_heads"], config["tie_word_embeddings"]) == (cfg.n_kv_heads, cfg.tie_embeddings)
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 50000.0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert ("lm_head.weight" in f.keys()) == (not cfg.tie_embeddings)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    eos_id = hf_tokenizer.eos_token_id
    assert eos_id == hf_tokenizer.convert_tokens_to_ids(EOS)
    assert (config["eos_token_id"], config["bos_token_id"]) == (eos_id, eos_id)
    prompt = hf_tokenizer("The quick brown fox", return_tensors="pt").input_ids
    text_ids = hf_tokenizer(SENTENCES[1] + SENTENCES[2], return_tensors="pt").input_ids
    assert hf_tokenizer.decode(text_ids[0]) == SENTENCES[1] + SENTENCES[2]

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    if cfg.tie_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    random_ids = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for ids in (text_ids, random_ids):
            torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)

    ours = greedy(model, prompt, 8, eos_id)
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert torch.equal(theirs, ours)


def test_cli_from_state_dict(tokenizer_dir, tmp_path):
    cfg = tiny_config(n_kv_heads=2)
    model = build(cfg)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps(cfg.to_dict()))
    main(["--state-dict", str(tmp_path / "model.pt"), "--model-config", str(tmp_path / "model.json"),
          "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "hf"), "--dtype", "bfloat16"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # bf16 weights: close to the fp32 model, not equal
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=0.05)


def test_state_dict_to_hf_names_and_errors():
    cfg = tiny_config(tie_embeddings=True, n_layers=1)
    state = build(cfg).state_dict()
    hf = state_dict_to_hf(state, cfg)
    assert set(hf) == {
        "model.embed_tokens.weight", "model.norm.weight",
        *(f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"),
        *(f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
    }
    # names wrapped by activation checkpointing / torch.compile / DeepSpeed are accepted
    wrapped = {"module._orig_mod." + k.replace("attention.", "_checkpoint_wrapped_module.attention."): v
               for k, v in state.items()}
    assert state_dict_to_hf(wrapped, cfg).keys() == hf.keys()
    with pytest.raises(ValueError, match="missing .*layers.0.attention.wq.weight"):
        state_dict_to_hf({k: v for k, v in state.items() if "wq" not in k}, cfg)
    with pytest.raises(ValueError, match="unexpected .*layers.1"):
        state_dict_to_hf({**state, "layers.1.ffn_norm.weight": torch.ones(cfg.dim)}, cfg)
    with pytest.raises(ValueError, match="layers.0.attention.wk.weight: shape"):
        state_dict_to_hf(state, tiny_config(tie_embeddings=True, n_layers=1, n_kv_heads=2))
    untied = {**state, "output.weight": torch.zeros_like(state["output.weight"])}
    with pytest.raises(ValueError, match="output.weight differs"):
        state_dict_to_hf(untied, cfg)
