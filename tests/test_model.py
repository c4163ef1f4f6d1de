import math

import pytest
import torch
import torch.nn.functional as F

import pretrain.model as model_module
from pretrain.config import model_preset, model_preset_names
from shard_format.errors import ConfigError
from pretrain.model import (
    ModelConfig,
    Transformer,
    apply_rope,
    flops_per_token,
    num_params,
    num_params_from_config,
    rope_cos_sin,
)


def small_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=32)
    return ModelConfig(**{**values, **overrides}).validate()


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def tokens(cfg: ModelConfig, batch: int = 2, length: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_loss():
    cfg = small_config()
    model = build(cfg)
    x = tokens(cfg)
    logits = model(x)
    assert logits.shape == (2, 16, cfg.vocab_size) and logits.dtype == torch.float32
    y = tokens(cfg, seed=2)
    loss = model(x, y)
    assert loss.shape == ()
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, cfg.vocab_size), y.view(-1)))
    # random init: the loss is close to uniform over the vocabulary
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.5
    y_ignored = y.clone()
    y_ignored[:, :8] = -100
    torch.testing.assert_close(model(x, y_ignored),
                               F.cross_entropy(logits[:, 8:].reshape(-1, cfg.vocab_size), y[:, 8:].reshape(-1)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sequence_longer_than_max_seq_len_is_refused():
    cfg = small_config(max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        build(cfg)(tokens(cfg, length=9))


def test_causal_masking():
    cfg = small_config()
    model = build(cfg)
    x = tokens(cfg)
    t = 6
    changed = x.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def expand_kv_heads(gqa: Transformer, cfg_mha: ModelConfig) -> Transformer:
    """An MHA model computing the same function as `gqa`: each kv head copied to its query group."""
    mha = Transformer(cfg_mha).eval()
    n_rep = gqa.cfg.n_heads // gqa.cfg.n_kv_heads
    state = gqa.state_dict()
    for key, value in list(state.items()):
        if key.endswith(("attention.wk.weight", "attention.wv.weight")):
            per_head = value.view(gqa.cfg.n_kv_heads, gqa.cfg.head_dim, gqa.cfg.dim)
            state[key] = per_head.repeat_interleave(n_rep, dim=0).reshape(-1, gqa.cfg.dim)
    mha.load_state_dict(state)
    return mha


def test_gqa_equals_mha_with_repeated_kv_heads(monkeypatch):
    cfg = small_config(n_heads=8, n_kv_heads=2)
    gqa = build(cfg)
    mha = expand_kv_heads(gqa, small_config(n_heads=8, n_kv_heads=8))
    x = tokens(cfg)
    with torch.no_grad():
        expected = mha(x)
        torch.testing.assert_close(gqa(x), expected, rtol=0, atol=1e-5)
        # the fallback for torch < 2.5 (explicit repeat_interleave) groups the heads the same way
        monkeypatch.setattr(model_module, "_SDPA_ENABLE_GQA", False)
        torch.testing.assert_close(gqa(x), expected, rtol=0, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    head_dim, length = 16, 64
    cos, sin = rope_cos_sin(head_dim, length, theta=10000.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=g), torch.randn(head_dim, generator=g)
    # the same q and k at every position, rotated by each position's angles
    rq = apply_rope(q.expand(length, head_dim), cos, sin)
    rk = apply_rope(k.expand(length, head_dim), cos, sin)
    scores = rq @ rk.T  # scores[i, j] = <q at i, k at j>
    for offset in (-7, 0, 3, 20):
        diagonal = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), rtol=0, atol=1e-4)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])
    # a rotation: norms are kept, position 0 is the identity
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(length))
    torch.testing.assert_close(rq[0], q)


def test_rope_matches_hugging_face_layout():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cos, sin = rope_cos_sin(16, 10, theta=500000.0)
    q, k = torch.randn(2, 3, 10, 16), torch.randn(2, 1, 10, 16)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(apply_rope(q, cos, sin), hf_q)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k)


def test_tied_embeddings_share_storage():
    cfg = small_config(tie_embeddings=True)
    model = build(cfg)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.output.weight.data_ptr() == model.tok_embeddings.weight.data_ptr()
    assert num_params(model) == num_params(build(small_config())) - cfg.vocab_size * cfg.dim
    model = model.to(torch.float64)
    assert model.output.weight is model.tok_embeddings.weight
    model(tokens(cfg), tokens(cfg, seed=3)).backward()
    assert model.tok_embeddings.weight.grad is model.output.weight.grad


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(n_heads=12, n_kv_heads=5, dim=96), "model.n_kv_heads: model.n_heads=12 is not divisible by model.n_kv_heads=5"),
    (dict(dim=100, n_heads=8, n_kv_heads=8), "model.n_heads: model.dim=100 is not divisible by model.n_heads=8"),
    (dict(dim=36, n_heads=4, n_kv_heads=4), "model.n_heads: the head dim"),  # head dim 9, odd
    (dict(vocab_size=0), "model.vocab_size"),
    (dict(n_layers=-1), "model.n_layers"),
    (dict(n_kv_heads=0), "model.n_kv_heads"),
    (dict(ffn_hidden_dim=0), "model.ffn_hidden_dim"),
    (dict(max_seq_len=2.5), "model.max_seq_len"),
    (dict(norm_eps=0.0), "model.norm_eps"),
    (dict(rope_theta=-1.0), "model.rope_theta"),
    (dict(tie_embeddings="yes"), "model.tie_embeddings"),
])
def test_config_validation_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        small_config(**overrides)


def test_config_from_dict_and_presets():
    with pytest.raises(ConfigError, match="^model.n_head: unknown key"):
        ModelConfig.from_dict(dict(dim=64, n_layers=2, n_head=4, n_kv_heads=4))
    with pytest.raises(ConfigError, match="^model.n_heads: missing"):
        ModelConfig.from_dict(dict(dim=64, n_layers=2, n_kv_heads=4))
    with pytest.raises(ValueError, match="model.preset"):
        model_preset("3b")
    cfg = model_preset("tiny", vocab_size=512)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.vocab_size, cfg.dim, cfg.n_kv_heads) == (512, 128, 2)


def test_ffn_dim_follows_llama_rule():
    assert ModelConfig(dim=4096, n_layers=1, n_heads=32, n_kv_heads=32).ffn_dim == 11008  # Llama-7B
    assert ModelConfig(dim=768, n_layers=1, n_heads=12, n_kv_heads=12).ffn_dim == 2048
    assert ModelConfig(dim=768, n_layers=1, n_heads=12, n_kv_heads=12, ffn_hidden_dim=3072).ffn_dim == 3072


def test_tiny_preset_builds_and_runs():
    cfg = model_preset("tiny", vocab_size=8192)
    model = build(cfg)
    assert num_params(model) == num_params_from_config(cfg) == 2_884_736
    x = torch.randint(0, cfg.vocab_size, (1, cfg.max_seq_len))
    assert model(x, x).isfinite()


# at vocab 8192, untied
PRESET_PARAMS = {"125m": 97_536_768, "350m": 325_108_736, "1.3b": 1_115_785_216, "7b": 6_543_380_480}


@pytest.mark.parametrize("name", sorted(set(model_preset_names()) - {"tiny"}))
def test_preset_param_counts(name):
    cfg = model_preset(name, vocab_size=8192)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert num_params(model) == num_params_from_config(cfg) == PRESET_PARAMS[name]
    assert num_params(model, exclude_embeddings=True) == num_params_from_config(cfg, exclude_embeddings=True)
    assert num_params(model) - num_params(model, exclude_embeddings=True) == cfg.vocab_size * cfg.dim
    tied = model_preset(name, vocab_size=8192, tie_embeddings=True)
    with torch.device("meta"):
        tied_model = Transformer(tied)
    assert num_params(tied_model) == num_params_from_config(tied) == PRESET_PARAMS[name] - cfg.vocab_size * cfg.dim


@pytest.mark.parametrize("name", model_preset_names())
def test_preset_read_outside_hydra_is_the_composed_one(name):
    from pretrain.config import compose

    assert model_preset(name, vocab_size=8192) == compose([f"model={name}"]).model.with_vocab(8192)


def test_7b_preset_is_llama2_7b():
    assert num_params_from_config(model_preset("7b", vocab_size=32000)) == 6_738_415_616


def test_meta_device_build_then_init():
    cfg = small_config()
    reference = build(cfg)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    torch.testing.assert_close(model.rope_cos, reference.rope_cos)
    torch.testing.assert_close(model.rope_sin, reference.rope_sin)
    assert model(tokens(cfg)).isfinite().all()
    assert "rope_cos" not in model.state_dict()


def test_init_scales_residual_projections():
    cfg = model_preset("tiny", vocab_size=8192)
    model = build(cfg)
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(param, torch.ones_like(param)), name
        else:
            expected = residual_std if name.endswith(("wo.weight", "w2.weight")) else cfg.init_std
            assert param.mean().abs().item() < 0.1 * expected, name
            assert param.std().item() == pytest.approx(expected, rel=0.05), name


def test_flops_per_token():
    cfg = model_preset("125m", vocab_size=8192)
    n = num_params_from_config(cfg, exclude_embeddings=True)
    flops = flops_per_token(cfg, 2048)
    assert flops > 6 * n
    assert flops == 6 * n + 12 * 12 * 768 * 2048
    assert flops_per_token(cfg, 4096) > flops
    # the output head counts, tied or not; the embedding lookup does not
    assert flops_per_token(model_preset("125m", vocab_size=8192, tie_embeddings=True), 2048) == flops
    assert n == num_params_from_config(cfg) - cfg.vocab_size * cfg.dim
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(cfg, 0)


def test_blocks_can_be_wrapped_with_activation_checkpointing():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    cfg = small_config()
    model, wrapped = build(cfg), build(cfg)
    for i, layer in enumerate(wrapped.layers):
        wrapped.layers[i] = checkpoint_wrapper(layer)
    x, y = tokens(cfg), tokens(cfg, seed=2)
    model(x, y).backward()
    wrapped(x, y).backward()
    grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in wrapped.named_parameters()}
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=0, atol=1e-6)


def test_the_hydra_model_schema_is_model_config():
    """One definition of the model's shape: what Hydra composes is what the model is built from."""
    from pretrain.config import compose

    assert isinstance(compose([]).model, ModelConfig)
