"""Typed configuration of the trainer: the one definition of every setting.

The dataclasses below are the Hydra schema (registered in the ConfigStore by `register_configs`,
primary config `conf/train.yaml`): an unknown key or a wrong type fails while Hydra composes the
config, naming the key. `validate(cfg, world_size)` then checks what types cannot express (ranges,
known kinds, the batch arithmetic) before any model is built. `ModelConfig` is also what the model is
built from, `DataConfig` what the data loader reads; the model presets are `conf/model/*.yaml` only
(`model_preset` reads one outside Hydra). The DeepSpeed JSON is generated from this config by
`pretrain.engine.deepspeed_config`.

This module imports neither torch nor deepspeed (a bad config fails in well under a second).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

from omegaconf import II, MISSING

# the one error type of the project: the message names the key
from monitoring.config import LoggingConfig
from shard_format.cli import CONF_DIR, typed_config
from shard_format.errors import ConfigError, InputError, require


ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu")
PRECISIONS = ("auto", "fp32", "bf16")

# DeepSpeed keys that have a typed counterpart here: `deepspeed.extra` may not set them.
# key -> (the setting to use instead, the sub-key it owns: the others may be set, None = the whole key)
_OWNED_DS_KEYS = {
    "train_batch_size": ("batch.global_batch_size", None),
    "train_micro_batch_size_per_gpu": ("batch.micro_batch_size", None),
    "gradient_accumulation_steps": ("batch.grad_accum_steps", None),
    "gradient_clipping": ("optim.grad_clip", None),
    "bf16": ("deepspeed.precision", "enabled"),
    "fp16": ("deepspeed.precision (auto | fp32 | bf16)", None),
    "optimizer": ("optim.* (the trainer passes its own AdamW: see pretrain/optim.py)", None),
    "scheduler": ("optim.* (the trainer schedules the learning rate itself)", None),
}
_OWNED_ZERO_KEYS = {
    "stage": ("deepspeed.zero_stage", None),
    "offload_optimizer": ("deepspeed.offload_optimizer", "device"),
    "offload_param": ("deepspeed.offload_param", "device"),
}


@dataclass(kw_only=True)
class ModelConfig:
    """The model's shape (conf/model/*.yaml); `vocab_size: null` takes it from the data manifest."""

    vocab_size: Optional[int] = None
    dim: int = MISSING
    n_layers: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    ffn_hidden_dim: Optional[int] = None  # null: Llama's rule, 8/3 * dim rounded up to multiple_of
    multiple_of: int = 256
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(8 * self.dim / 3)
        return self.multiple_of * -(-hidden // self.multiple_of)

    def with_vocab(self, vocab_size: Optional[int] = None) -> ModelConfig:
        """A copy whose null `vocab_size` is filled in by `vocab_size` (the data manifest's)."""
        vocab = self.vocab_size if self.vocab_size is not None else vocab_size
        require(vocab is not None, "model.vocab_size",
                 "null and no vocabulary size given (it comes from the data manifest)")
        return dataclasses.replace(self, vocab_size=vocab)

    def validate(self, *, need_vocab: bool = True) -> ModelConfig:
        """Every rule of a shape: ConfigError naming the key. `need_vocab=False` allows a null vocab_size
        (checked before the data manifest is read, which fills it in)."""
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            require(value is not None and value != MISSING, f"model.{name}",
                    f"missing: pick a model preset (model={'|'.join(model_preset_names())}) or set it")
            _require_positive_int(f"model.{name}", value)
        if need_vocab or self.vocab_size is not None:
            _require_positive_int("model.vocab_size", self.vocab_size)
        if self.ffn_hidden_dim is not None:
            _require_positive_int("model.ffn_hidden_dim", self.ffn_hidden_dim)
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            require(not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0, f"model.{name}",
                    f"must be a positive number, got {value!r}")
        require(isinstance(self.tie_embeddings, bool), "model.tie_embeddings",
                f"must be true or false, got {self.tie_embeddings!r}")
        require(self.dim % self.n_heads == 0, "model.n_heads",
                f"model.dim={self.dim} is not divisible by model.n_heads={self.n_heads}")
        require(self.n_heads % self.n_kv_heads == 0, "model.n_kv_heads",
                f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads={self.n_kv_heads}")
        require(self.head_dim % 2 == 0, "model.n_heads",
                f"the head dim model.dim/model.n_heads = {self.dim}/{self.n_heads} = {self.head_dim} must be even (RoPE)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Build and validate a config; unknown or missing keys are errors naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            require(key in known, f"model.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        return cls(**values).validate()


def _require_positive_int(key: str, value: Any) -> None:
    require(not isinstance(value, bool) and isinstance(value, int) and value > 0, key,
            f"must be a positive integer, got {value!r}")


def model_preset_names() -> list[str]:
    """The presets: the files of conf/model."""
    return sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """Preset `name` (conf/model/<name>.yaml) with `overrides`, validated: for tools and tests outside Hydra
    (the vocabulary size comes from the caller, the presets leave it null)."""
    from omegaconf import OmegaConf

    names = model_preset_names()
    if name not in names:
        raise ConfigError(f"model.preset: unknown preset {name!r} (choose from {', '.join(names)})")
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    values.pop("defaults", None)  # the schema, merged here directly
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), values, overrides)
    return OmegaConf.to_object(merged).validate()


@dataclass
class OptimSection:
    """AdamW with linear warmup then cosine decay to lr * min_lr_ratio."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping


@dataclass
class DataConfig:
    """The training data, as `pretrain.data.build_train_batches` reads it."""

    path: str = "outputs/data"  # the shard folder holding manifest.json (python -m data_pipeline's output_dir)
    seq_len: int = II("model.max_seq_len")  # tokens per sample the model sees (each sample reads seq_len + 1)
    # source name (as in the manifest) -> sampling weight; empty = every source, in proportion to its tokens.
    # With weights, every source of the train split needs one (0 leaves it out).
    weights: dict[str, float] = field(default_factory=dict)
    seed: int = 1234
    # resume from a checkpoint trained on other data (another manifest sha256): refused unless true
    allow_changed: bool = False


@dataclass
class DeepSpeedSection:
    zero_stage: int = 2  # 0 | 1 | 2 | 3
    offload_optimizer: str = "none"  # none | cpu (ZeRO 1-3)
    offload_param: str = "none"  # none | cpu (ZeRO-3 only)
    # auto: bf16 on GPUs, fp32 on CPUs (most CPUs have no fast bf16 matmul: measured 9x slower here)
    precision: str = "auto"  # auto | fp32 | bf16
    # deep-merged last into the generated JSON; a null value removes that key
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchSection:
    """global = micro * grad_accum * data-parallel world size: give any two (null = derived), or all three consistent.

    Only micro_batch_size given: grad_accum_steps = 1.
    """

    micro_batch_size: Optional[int] = 8  # sequences per rank per forward/backward
    grad_accum_steps: Optional[int] = None
    global_batch_size: Optional[int] = None  # sequences per optimizer step, all ranks together


@dataclass
class CheckpointSection:
    dir: str = "${output_dir}/checkpoints"
    every_steps: int = 500  # 0 = no periodic checkpoints
    keep_last: int = 3  # 0 = keep all
    resume: str = "auto"  # auto (latest in dir, if any) | none | PATH of a checkpoint
    # write in the background: training waits only for the copy of the state to host memory
    async_save: bool = True


@dataclass
class EvalSection:
    every_steps: int = 200  # 0 = no periodic evaluation
    batches: int = 20  # validation batches per evaluation, per rank


@dataclass
class AlertsSection:
    """Alerts on log steps (pretrain/alerts.py); a non-finite-loss stop and a stop signal always alert."""

    spike_window: int = 20  # log steps whose train loss gives the rolling mean and std; 0 = no spike alert
    spike_std: float = 6.0  # a loss above the mean by more than this many standard deviations is a spike
    slow_fraction: float = 0.5  # alert when tokens/s falls below this fraction of its running median; 0 = off
    slow_warmup: int = 5  # first log steps not judged (compilation, caches): their tokens/s is not counted
    slow_window: int = 100  # log steps in the running median


@dataclass
class MemorySection:
    """The per-rank memory estimate (pretrain/memory.py), printed before anything is built."""

    device_gib: Optional[float] = None  # null: the GPU's total memory (CPU runs: no limit checked)
    world_size: Optional[int] = None  # with estimate_only: the planned number of ranks (null: the launched one)
    check: bool = True  # refuse to start when the estimate exceeds the device memory


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    batch: BatchSection = field(default_factory=BatchSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    memory: MemorySection = field(default_factory=MemorySection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    estimate_only: bool = False  # print the per-rank memory estimate and exit: builds nothing, needs no GPU
    profile_step: int = 0  # profile this optimizer step (trace + operator table in output_dir/profile); 0 = off
    seed: int = 1234
    max_steps: int = 1000
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile the model
    threads_per_rank: int = 1  # torch.set_num_threads; more threads than cores collapse CPU throughput
    # a collective that waits longer fails the run (a rank died or hangs); above the slowest checkpoint write
    collective_timeout_minutes: float = 10.0
    output_dir: str = "outputs/train"
    peak_tflops: Optional[float] = None  # per device, for MFU; null = look the device up


class BatchSizes(NamedTuple):
    micro_batch_size: int
    grad_accum_steps: int
    global_batch_size: int


def derive_batch(batch: BatchSection, world_size: int) -> BatchSizes:
    """(micro, grad_accum, global) from the given two (or three, checked) and the data-parallel world size."""
    require(isinstance(world_size, int) and world_size >= 1, "world_size", f"{world_size!r}: must be a positive integer")
    micro, accum, glob = batch.micro_batch_size, batch.grad_accum_steps, batch.global_batch_size
    for key, value in (("micro_batch_size", micro), ("grad_accum_steps", accum), ("global_batch_size", glob)):
        require(value is None or value >= 1, f"batch.{key}", f"{value}: must be positive (or null = derived)")
    given = (f"batch.micro_batch_size={micro}, batch.grad_accum_steps={accum}, "
             f"batch.global_batch_size={glob}, world size {world_size}")
    if micro is not None and accum is not None:
        if glob is not None and glob != micro * accum * world_size:
            raise ConfigError(
                f"batch.global_batch_size, batch.micro_batch_size, batch.grad_accum_steps: inconsistent: "
                f"{glob} != {micro} * {accum} * {world_size} (micro * grad_accum * world size); "
                f"set one of them to null to derive it (e.g. batch.micro_batch_size=null)")
        return BatchSizes(micro, accum, micro * accum * world_size)
    if micro is not None and glob is not None:
        require(glob % (micro * world_size) == 0, "batch.global_batch_size",
                 f"{glob} is not a multiple of batch.micro_batch_size * world size = {micro} * {world_size} ({given})")
        return BatchSizes(micro, glob // (micro * world_size), glob)
    if accum is not None and glob is not None:
        require(glob % (accum * world_size) == 0, "batch.global_batch_size",
                 f"{glob} is not a multiple of batch.grad_accum_steps * world size = {accum} * {world_size} ({given})")
        return BatchSizes(glob // (accum * world_size), accum, glob)
    if micro is not None:
        return BatchSizes(micro, 1, micro * world_size)
    raise ConfigError(f"batch.micro_batch_size: give it, or both batch.grad_accum_steps and "
                      f"batch.global_batch_size ({given})")


def _check_owned(section: Any, owned: dict, prefix: str) -> None:
    if not isinstance(section, dict):
        return
    for key, (instead, sub_key) in owned.items():
        if key not in section:
            continue
        value = section[key]
        clash = sub_key is None or not isinstance(value, dict) or sub_key in value
        what = key if sub_key is None or not isinstance(value, dict) else f"{key}.{sub_key}"
        require(not clash, f"{prefix}.{what}", f"generated from the config: set {instead} instead")


def validate_extra(extra: dict) -> None:
    """`deepspeed.extra` may not set what the typed config generates (see `_OWNED_DS_KEYS`)."""
    _check_owned(extra, _OWNED_DS_KEYS, "deepspeed.extra")
    _check_owned(extra.get("zero_optimization"), _OWNED_ZERO_KEYS, "deepspeed.extra.zero_optimization")


def validate(cfg: TrainConfig, world_size: int) -> BatchSizes:
    """Check everything types cannot, before any model is built; return the derived batch sizes."""
    require(cfg.seed >= 0, "seed", f"{cfg.seed}: must be >= 0")
    require(cfg.max_steps >= 1, "max_steps", f"{cfg.max_steps}: must be positive")
    require(cfg.profile_step >= 0, "profile_step", f"{cfg.profile_step}: must be >= 0 (0 = off)")
    require(cfg.threads_per_rank >= 1, "threads_per_rank", f"{cfg.threads_per_rank}: must be positive")
    require(cfg.collective_timeout_minutes > 0, "collective_timeout_minutes",
             f"{cfg.collective_timeout_minutes}: must be positive")
    require(bool(cfg.output_dir), "output_dir", "empty")
    require(cfg.peak_tflops is None or cfg.peak_tflops > 0, "peak_tflops", f"{cfg.peak_tflops}: must be positive (or null)")
    cfg.model.validate(need_vocab=False)

    o = cfg.optim
    require(o.lr > 0, "optim.lr", f"{o.lr}: must be positive")
    require(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", f"{o.min_lr_ratio}: must be in [0, 1]")
    require(o.warmup_steps >= 0, "optim.warmup_steps", f"{o.warmup_steps}: must be >= 0")
    require(o.weight_decay >= 0, "optim.weight_decay", f"{o.weight_decay}: must be >= 0")
    require(len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas), "optim.betas",
             f"{list(o.betas)}: expected two values in [0, 1)")
    require(o.eps > 0, "optim.eps", f"{o.eps}: must be positive")
    require(o.grad_clip >= 0, "optim.grad_clip", f"{o.grad_clip}: must be >= 0 (0 = no clipping)")

    d = cfg.data
    require(bool(d.path), "data.path", "empty: the shard folder with manifest.json")
    require(isinstance(d.seq_len, int), "data.seq_len", f"{d.seq_len!r}: not an integer (interpolations resolve when "
             "Hydra composes the config; built in Python, set it)")
    require(d.seq_len >= 1, "data.seq_len", f"{d.seq_len}: must be positive")
    require(d.seq_len <= cfg.model.max_seq_len, "data.seq_len",
             f"{d.seq_len} is longer than model.max_seq_len={cfg.model.max_seq_len}")
    for name, weight in d.weights.items():
        require(weight >= 0, f"data.weights.{name}", f"{weight}: must be >= 0")
    require(not d.weights or sum(d.weights.values()) > 0, "data.weights", "all weights are 0")

    ds = cfg.deepspeed
    require(ds.zero_stage in ZERO_STAGES, "deepspeed.zero_stage", f"{ds.zero_stage}: expected one of {ZERO_STAGES}")
    require(ds.offload_optimizer in OFFLOAD_DEVICES, "deepspeed.offload_optimizer",
             f"{ds.offload_optimizer!r}: expected one of {OFFLOAD_DEVICES}")
    require(ds.offload_param in OFFLOAD_DEVICES, "deepspeed.offload_param",
             f"{ds.offload_param!r}: expected one of {OFFLOAD_DEVICES}")
    require(ds.precision in PRECISIONS, "deepspeed.precision", f"{ds.precision!r}: expected one of {PRECISIONS}")
    require(ds.offload_optimizer == "none" or ds.zero_stage >= 1, "deepspeed.offload_optimizer",
             f"needs ZeRO stage 1, 2 or 3 (deepspeed.zero_stage={ds.zero_stage})")
    require(ds.offload_param == "none" or ds.zero_stage == 3, "deepspeed.offload_param",
             f"needs ZeRO stage 3 (deepspeed.zero_stage={ds.zero_stage})")
    validate_extra(ds.extra)

    sizes = derive_batch(cfg.batch, world_size)

    cfg.logging.validate()

    ck = cfg.checkpoint
    require(bool(ck.dir), "checkpoint.dir", "empty")
    require(ck.every_steps >= 0, "checkpoint.every_steps", f"{ck.every_steps}: must be >= 0 (0 = off)")
    require(ck.keep_last >= 0, "checkpoint.keep_last", f"{ck.keep_last}: must be >= 0 (0 = keep all)")
    require(bool(ck.resume), "checkpoint.resume", "empty: expected auto, none or a checkpoint path")
    if ck.resume not in ("auto", "none"):
        require(Path(ck.resume).exists(), "checkpoint.resume", f"{ck.resume} does not exist (or use auto | none)")

    require(cfg.eval.every_steps >= 0, "eval.every_steps", f"{cfg.eval.every_steps}: must be >= 0 (0 = off)")
    require(cfg.eval.batches >= 1, "eval.batches", f"{cfg.eval.batches}: must be positive")

    al = cfg.alerts
    require(al.spike_window == 0 or al.spike_window >= 2, "alerts.spike_window",
            f"{al.spike_window}: must be >= 2 (a standard deviation needs two losses), or 0 = off")
    require(al.spike_std > 0, "alerts.spike_std", f"{al.spike_std}: must be positive")
    require(0 <= al.slow_fraction < 1, "alerts.slow_fraction", f"{al.slow_fraction}: must be in [0, 1) (0 = off)")
    require(al.slow_warmup >= 0, "alerts.slow_warmup", f"{al.slow_warmup}: must be >= 0")
    require(al.slow_window >= 1, "alerts.slow_window", f"{al.slow_window}: must be positive")

    mem = cfg.memory
    require(mem.device_gib is None or mem.device_gib > 0, "memory.device_gib", f"{mem.device_gib}: must be positive (or null)")
    require(mem.world_size is None or mem.world_size >= 1, "memory.world_size",
             f"{mem.world_size}: must be positive (or null)")

    return sizes


def read_manifest(cfg: TrainConfig) -> dict:
    """The shard manifest of `data.path`; a missing or unreadable one is a ConfigError naming data.path."""
    from shard_format import manifest as manifest_lib

    try:
        return manifest_lib.read(cfg.data.path)
    except InputError as exc:
        raise ConfigError(f"data.path: {exc}") from None


def validate_against_manifest(cfg: TrainConfig, manifest: dict) -> int:
    """Check the config against the shard manifest (`shard_format.manifest.read(cfg.data.path)`); return the
    vocabulary size to build the model with."""
    data_vocab = int(manifest["tokenizer"]["vocab_size"])
    sources = set(manifest["splits"].get("train", {}).get("sources", {}))
    for name in cfg.data.weights:
        require(name in sources, f"data.weights.{name}", f"no source {name!r} in {cfg.data.path}; it has {sorted(sources)}")
    vocab = cfg.model.vocab_size
    if vocab is None:
        return data_vocab
    require(vocab >= data_vocab, "model.vocab_size",
             f"{vocab} is smaller than the tokenizer's vocabulary ({data_vocab}, from {cfg.data.path})")
    return vocab


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    # group schemas: every group file starts with `defaults: [<group>_schema, _self_]`
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="optim", name="optim_schema", node=OptimSection)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="deepspeed", name="deepspeed_schema", node=DeepSpeedSection)
    cs.store(group="logging", name="logging_schema", node=LoggingConfig)


def from_hydra(dict_cfg: Any) -> TrainConfig:
    """The typed config from Hydra's DictConfig (what `@hydra.main` passes); see `shard_format.cli.typed_config`."""
    return typed_config(dict_cfg, TrainConfig)


def compose(overrides: Sequence[str] = (), config_name: str = "train", config_dir: Optional[str] = None) -> TrainConfig:
    """The typed config from `conf/train.yaml` and Hydra overrides, outside `@hydra.main` (tools, tests).
    Hydra itself raises on an unknown key or a wrong type (hydra.errors.ConfigCompositionException)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        dict_cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return from_hydra(dict_cfg)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict of the resolved config (W&B config, checkpoint metadata)."""
    return dataclasses.asdict(cfg)
