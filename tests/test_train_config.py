"""The trainer's config: Hydra composition of conf/train.yaml, validation, derived batch sizes, the
generated DeepSpeed JSON, and the distributed environment from torchrun, the deepspeed launcher,
Slurm or nothing. No model is built and no process group is started here."""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from pretrain.config import (
    CONF_DIR,
    BatchSection,
    BatchSizes,
    ConfigError,
    TrainConfig,
    compose,
    derive_batch,
    to_dict,
    validate,
    validate_against_manifest,
)
from pretrain.distributed import DistEnv, detect, export_env, first_host, parse_node_addr, strip_local_rank_argument
from pretrain.engine import deepspeed_config

from .conftest import ROOT

GROUPS = ("model", "deepspeed", "optim", "data", "logging")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


DEFAULT_CHOICES = ("model=tiny", "deepspeed=zero2", "optim=adamw", "data=sample", "logging=offline")


def _composed(choice: str) -> TrainConfig:
    return _compose_cached("" if choice in DEFAULT_CHOICES else choice)


@functools.lru_cache(maxsize=None)
def _compose_cached(choice: str) -> TrainConfig:
    return compose([choice] if choice else [])


def composed(*overrides: str) -> TrainConfig:
    """conf/train.yaml with group choices composed by Hydra (cached: a composition takes 0.1-0.4 s here) and
    value overrides `a.b=YAML` applied to a copy, as Hydra would (`+` adds a key to a free-form dict)."""
    cfg = copy.deepcopy(_composed(""))
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if key in GROUPS:
            setattr(cfg, key, copy.deepcopy(getattr(_composed(f"{key}={value}"), key)))
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for name in parents:
            node = node.setdefault(name, {}) if isinstance(node, dict) else getattr(node, name)
        if isinstance(node, dict):
            node[leaf] = yaml.safe_load(value)
        else:
            assert hasattr(node, leaf), key
            setattr(node, leaf, yaml.safe_load(value))
    return cfg


# --------------------------------------------------------------------------------------------- compose


def test_defaults_compose_to_the_documented_tree():
    cfg = _composed("")
    assert isinstance(cfg, TrainConfig)
    assert (cfg.model.dim, cfg.model.n_layers, cfg.model.n_heads, cfg.model.n_kv_heads, cfg.model.max_seq_len) == (128, 4, 4, 2, 256)
    assert cfg.model.vocab_size is None  # from the data manifest
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.precision, cfg.deepspeed.offload_optimizer) == (2, "auto", "none")
    assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.lr == 3e-4
    assert cfg.data.path == "outputs/data"  # where `python -m data_pipeline` writes by default
    assert cfg.data.seq_len == cfg.model.max_seq_len == 256  # interpolated
    assert cfg.logging.mode == "offline"
    assert cfg.checkpoint.dir == "outputs/train/checkpoints" and cfg.checkpoint.resume == "auto"
    assert (cfg.batch.micro_batch_size, cfg.batch.grad_accum_steps, cfg.batch.global_batch_size) == (8, None, None)
    assert validate(cfg, world_size=1) == (8, 1, 8)
    json.dumps(to_dict(cfg))  # plain data, for W&B and checkpoint metadata


def test_every_group_file_is_covered():
    defaults = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["defaults"]
    assert defaults == ["train_schema", *({k: v} for k, v in (c.split("=") for c in DEFAULT_CHOICES)), "_self_"]
    assert group_options("model") == ["1.3b", "125m", "350m", "7b", "tiny"]
    assert group_options("deepspeed") == ["zero0", "zero1", "zero2", "zero3", "zero3_offload"]
    assert group_options("logging") == ["disabled", "offline", "online"]
    assert group_options("optim") == ["adamw"] and group_options("data") == ["sample"]


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_validates(group, option):
    cfg = _composed(f"{group}={option}")
    for world_size in (1, 2, 8):
        sizes = validate(cfg, world_size)
        assert sizes.global_batch_size == sizes.micro_batch_size * sizes.grad_accum_steps * world_size
    ds = deepspeed_config(cfg, 2, on_cpu=True)
    assert ds["train_batch_size"] == 16
    if group == "logging":
        assert cfg.logging.mode == option


@pytest.mark.parametrize(
    ("option", "shape"),
    [
        ("tiny", (128, 4, 4, 2, None, 256)),
        ("125m", (768, 12, 12, 12, None, 2048)),
        ("350m", (1024, 24, 16, 16, None, 2048)),
        ("1.3b", (2048, 24, 32, 8, None, 2048)),
        ("7b", (4096, 32, 32, 32, 11008, 4096)),
    ],
)
def test_model_presets_have_llama_style_shapes(option, shape):
    m = _composed(f"model={option}").model
    assert (m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_hidden_dim, m.max_seq_len) == shape
    kwargs = m.with_vocab(vocab_size=8192).to_dict()
    assert kwargs["vocab_size"] == 8192
    assert set(kwargs) == {"vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden_dim", "multiple_of",
                           "max_seq_len", "rope_theta", "norm_eps", "tie_embeddings", "init_std"}


def test_hydra_run_dir_is_per_rank_under_the_output_dir(monkeypatch):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["output_dir=/runs/a"], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.run.dir") == "/runs/a/logs/hydra/rank3"
    assert cfg.hydra.job.chdir is False


# ------------------------------------------------------------------------- errors naming the key


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.hidden=3"], "model.hidden"),
        (["seeed=3"], "seeed"),
        (["batch.micro_batch_size=abc"], "batch.micro_batch_size"),
        (["optim.betas=[a,b]"], "optim.betas"),
        (["activation_checkpointing=maybe"], "activation_checkpointing"),
    ],
)
def test_unknown_key_or_wrong_type_fails_while_composing(overrides, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose(overrides)
    assert key in f"{info.value} {info.value.__cause__}"


@pytest.mark.parametrize(("override", "key"), [("+model.hidden=3", "model.hidden"), ("+foo=1", "foo")])
def test_forced_unknown_key_is_not_dropped_silently(override, key):
    # `+key=value` bypasses Hydra's struct check and OmegaConf.to_object would drop the key
    with pytest.raises(ConfigError, match=rf"^{key}: unknown key"):
        compose([override])


def test_free_form_dicts_take_new_keys():
    cfg = compose(["++data.weights={web: 0.5, books: 0.5}", "+deepspeed.extra.zero_optimization.round_robin_gradients=true"])
    assert cfg.data.weights == {"web": 0.5, "books": 0.5}
    assert deepspeed_config(cfg, 1, on_cpu=True)["zero_optimization"]["round_robin_gradients"] is True


@pytest.fixture
def conf_copy(tmp_path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return conf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("dim: 64\nn_layers: 2\nn_heads: 2\nn_kv_heads: 2\nhidden_size: 3\n", "model.hidden_size"),
        ("dim: big\nn_layers: 2\nn_heads: 2\nn_kv_heads: 2\n", "model.dim"),
    ],
)
def test_bad_group_file_fails_naming_file_and_key(conf_copy, body, message):
    (conf_copy / "model" / "mine.yaml").write_text("defaults:\n  - model_schema\n  - _self_\n" + body)
    with pytest.raises(ConfigCompositionException, match="model/mine") as info:
        compose(["model=mine"], config_dir=str(conf_copy))
    assert message in str(info.value)


def test_missing_model_field_names_it(conf_copy):
    (conf_copy / "model" / "half.yaml").write_text("defaults:\n  - model_schema\n  - _self_\ndim: 64\nn_layers: 2\n")
    with pytest.raises(ConfigError, match=r"^model\.n_heads: missing"):
        compose(["model=half"], config_dir=str(conf_copy))


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(Exception, match="1.3b"):
        compose(["model=13b"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.n_heads=3"], "model.n_heads"),
        (["model.n_kv_heads=3"], "model.n_kv_heads"),
        (["model.dim=96", "model.n_heads=32", "model.n_kv_heads=8"], "model.n_heads"),  # odd head dim: no RoPE
        (["model.vocab_size=0"], "model.vocab_size"),
        (["data.seq_len=512"], "data.seq_len"),
        (["+data.weights.web=-1"], "data.weights.web"),
        (["optim.lr=0"], "optim.lr"),
        (["optim.min_lr_ratio=1.5"], "optim.min_lr_ratio"),
        (["optim.betas=[0.9]"], "optim.betas"),
        (["optim.warmup_steps=-1"], "optim.warmup_steps"),
        (["deepspeed.zero_stage=4"], "deepspeed.zero_stage"),
        (["deepspeed.precision=fp16"], "deepspeed.precision"),
        (["deepspeed.offload_optimizer=nvme"], "deepspeed.offload_optimizer"),
        (["deepspeed=zero0", "deepspeed.offload_optimizer=cpu"], "deepspeed.offload_optimizer"),
        (["deepspeed=zero2", "deepspeed.offload_param=cpu"], "deepspeed.offload_param"),
        (["+deepspeed.extra.train_batch_size=64"], "deepspeed.extra.train_batch_size"),
        (["+deepspeed.extra.optimizer.type=Adam"], "deepspeed.extra.optimizer"),
        (["+deepspeed.extra.bf16.enabled=false"], "deepspeed.extra.bf16.enabled"),
        (["+deepspeed.extra.zero_optimization.stage=3"], "deepspeed.extra.zero_optimization.stage"),
        (["+deepspeed.extra.zero_optimization.offload_param.device=cpu"], "deepspeed.extra.zero_optimization.offload_param.device"),
        (["batch.micro_batch_size=0"], "batch.micro_batch_size"),
        (["logging.mode=verbose"], "logging.mode"),
        (["logging.log_every=0"], "logging.log_every"),
        (["checkpoint.resume=/no/such/checkpoint"], "checkpoint.resume"),
        (["checkpoint.keep_last=-1"], "checkpoint.keep_last"),
        (["eval.batches=0"], "eval.batches"),
        (["max_steps=0"], "max_steps"),
        (["threads_per_rank=0"], "threads_per_rank"),
        (["peak_tflops=-1"], "peak_tflops"),
        (["alerts.spike_window=1"], "alerts.spike_window"),
        (["alerts.spike_std=0"], "alerts.spike_std"),
        (["alerts.slow_fraction=1.5"], "alerts.slow_fraction"),
        (["alerts.slow_warmup=-1"], "alerts.slow_warmup"),
        (["alerts.slow_window=0"], "alerts.slow_window"),
    ],
)
def test_validate_names_the_key(overrides, key):
    cfg = composed(*overrides)
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}:"):
        validate(cfg, world_size=2)


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(ConfigError, match="^model.dim: missing"):
        validate(TrainConfig(), 1)
    cfg = TrainConfig()
    cfg.model = copy.deepcopy(_composed("").model)
    with pytest.raises(ConfigError, match="^data.seq_len: '[$][{]model.max_seq_len[}]': not an integer"):
        validate(cfg, 1)
    cfg.data.seq_len = 128
    assert validate(cfg, 4) == (8, 1, 32)


def test_short_runs_are_valid():
    assert validate(composed("max_steps=3", "eval.every_steps=0", "checkpoint.every_steps=0"), 1)


def test_inconsistent_batch_sizes_fail_fast_naming_keys_and_numbers():
    start = time.perf_counter()
    cfg = compose(["batch.micro_batch_size=4", "batch.grad_accum_steps=2", "batch.global_batch_size=100"])
    with pytest.raises(ConfigError) as info:
        validate(cfg, world_size=2)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    for key in ("batch.global_batch_size", "batch.micro_batch_size", "batch.grad_accum_steps"):
        assert key in message
    assert "100 != 4 * 2 * 2" in message


def test_config_errors_come_before_torch_is_imported():
    """The config module imports neither torch nor deepspeed: a bad config fails before any model."""
    code = (
        "import sys\n"
        "from pretrain.config import ConfigError, compose, validate\n"
        "cfg = compose(['batch.micro_batch_size=4', 'batch.global_batch_size=30'])\n"
        "try:\n    validate(cfg, 2)\nexcept ConfigError as exc:\n    print(exc)\n"
        "print('torch' in sys.modules, 'deepspeed' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == [
        "batch.global_batch_size: 30 is not a multiple of batch.micro_batch_size * world size = 4 * 2 "
        "(batch.micro_batch_size=4, batch.grad_accum_steps=None, batch.global_batch_size=30, world size 2)",
        "False False",
    ]


# ------------------------------------------------------------------------------------- batch sizes


@pytest.mark.parametrize(
    ("micro", "accum", "glob", "world", "expected"),
    [
        (8, None, None, 1, (8, 1, 8)),
        (8, None, None, 4, (8, 1, 32)),
        (4, 2, None, 2, (4, 2, 16)),
        (4, None, 64, 2, (4, 8, 64)),
        (None, 4, 64, 2, (8, 4, 64)),
        (4, 8, 64, 2, (4, 8, 64)),  # all three, consistent
        (1, 1, 1, 1, (1, 1, 1)),
        (2, None, 512, 8, (2, 32, 512)),
        (None, 1, 512, 8, (64, 1, 512)),
    ],
)
def test_derive_batch(micro, accum, glob, world, expected):
    sizes = derive_batch(BatchSection(micro, accum, glob), world)
    assert sizes == expected and isinstance(sizes, BatchSizes)
    assert sizes.global_batch_size == sizes.micro_batch_size * sizes.grad_accum_steps * world


@pytest.mark.parametrize(
    ("micro", "accum", "glob", "world", "message"),
    [
        (4, 2, 100, 2, "100 != 4 * 2 * 2"),
        (4, None, 30, 2, "30 is not a multiple of batch.micro_batch_size * world size = 4 * 2"),
        (None, 3, 32, 2, "32 is not a multiple of batch.grad_accum_steps * world size = 3 * 2"),
        (None, None, 64, 2, "batch.micro_batch_size: give it"),
        (None, 4, None, 2, "batch.micro_batch_size: give it"),
        (-1, None, None, 1, "batch.micro_batch_size: -1"),
        (4, 0, None, 1, "batch.grad_accum_steps: 0"),
        (4, None, None, 0, "world_size"),
    ],
)
def test_derive_batch_errors(micro, accum, glob, world, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        derive_batch(BatchSection(micro, accum, glob), world)


# ---------------------------------------------------------------------------------- DeepSpeed JSON


def ds_for(preset: str, world_size: int = 2, on_cpu: bool = True, **kwargs) -> dict:
    cfg = composed(f"deepspeed={preset}", "batch.micro_batch_size=4", "batch.global_batch_size=64", "optim.grad_clip=0.5")
    validate(cfg, world_size)
    return deepspeed_config(cfg, world_size, on_cpu=on_cpu, **kwargs)


COMMON = {
    "train_batch_size": 64,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "gradient_clipping": 0.5,
    "steps_per_print": 10**12,
    "wall_clock_breakdown": False,
    "checkpoint": {"load_universal": False},
}
BUCKET = 5_000_000  # tiny model: the lower bound


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("zero0", {**COMMON, "bf16": {"enabled": False}, "zero_optimization": {"stage": 0}}),
        ("zero1", {**COMMON, "bf16": {"enabled": False}, "zero_optimization": {
            "stage": 1, "contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": BUCKET,
            "allgather_partitions": True, "allgather_bucket_size": BUCKET, "reduce_scatter": True}}),
        ("zero2", {**COMMON, "bf16": {"enabled": False}, "zero_optimization": {
            "stage": 2, "contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": BUCKET,
            "allgather_partitions": True, "allgather_bucket_size": BUCKET, "reduce_scatter": True}}),
        ("zero3", {**COMMON, "bf16": {"enabled": False}, "zero_optimization": {
            "stage": 3, "contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": BUCKET,
            "stage3_prefetch_bucket_size": BUCKET, "stage3_param_persistence_threshold": 1280,
            "stage3_gather_16bit_weights_on_model_save": False}}),
        ("zero3_offload", {**COMMON, "bf16": {"enabled": False}, "zero_optimization": {
            "stage": 3, "contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": BUCKET,
            "stage3_prefetch_bucket_size": BUCKET, "stage3_param_persistence_threshold": 1280,
            "stage3_gather_16bit_weights_on_model_save": False,
            "offload_optimizer": {"device": "cpu", "pin_memory": False},
            "offload_param": {"device": "cpu", "pin_memory": False}}}),
    ],
)
def test_deepspeed_config_per_preset_on_cpu(preset, expected):
    """precision auto: fp32 on CPUs (no fast bf16 matmul there), bf16 on GPUs."""
    ds = ds_for(preset)
    assert ds == expected
    assert "optimizer" not in ds and "scheduler" not in ds  # the trainer passes a client torch.optim.AdamW
    json.dumps(ds)


def test_deepspeed_config_on_gpu_pins_memory_and_overlaps_communication():
    zero = ds_for("zero3_offload", on_cpu=False)["zero_optimization"]
    assert zero["overlap_comm"] is True
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}


def test_deepspeed_config_follows_world_size_and_model():
    assert [ds_for("zero2", world_size=w)["gradient_accumulation_steps"] for w in (1, 2, 4, 16)] == [16, 8, 4, 1]
    with pytest.raises(ConfigError, match="batch.global_batch_size"):
        ds_for("zero2", world_size=32)  # 64 sequences cannot be 4 per rank on 32 ranks
    big = deepspeed_config(composed("model=7b", "deepspeed=zero3"), 8, on_cpu=False)["zero_optimization"]
    assert big["reduce_bucket_size"] == 24 * 4096 * 4096 and big["stage3_param_persistence_threshold"] == 40960


def test_load_universal_is_set_by_the_trainer():
    assert ds_for("zero2", load_universal=True)["checkpoint"] == {"load_universal": True}


def test_extra_is_deep_merged_last_and_null_removes():
    cfg = composed(
        "+deepspeed.extra.zero_optimization.reduce_bucket_size=1000",
        "+deepspeed.extra.zero_optimization.offload_optimizer.buffer_count=8",
        "+deepspeed.extra.wall_clock_breakdown=true",
        "+deepspeed.extra.checkpoint=null",
        "+deepspeed.extra.comms_logger.enabled=true",
        "deepspeed.offload_optimizer=cpu",
    )
    validate(cfg, 1)
    ds = deepspeed_config(cfg, 1, on_cpu=True)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1000
    assert ds["zero_optimization"]["allgather_bucket_size"] == BUCKET  # untouched sibling
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False, "buffer_count": 8}
    assert ds["wall_clock_breakdown"] is True and ds["comms_logger"] == {"enabled": True}
    assert "checkpoint" not in ds
    assert cfg.deepspeed.extra["zero_optimization"]["reduce_bucket_size"] == 1000  # the config is not mutated


def test_deepspeeds_own_schema_accepts_every_preset():
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    for preset in group_options("deepspeed"):
        parsed = DeepSpeedConfig(ds_for(preset, world_size=1, load_universal=True))
        assert parsed.zero_optimization_stage == int(preset[4])
        assert (parsed.train_batch_size, parsed.gradient_accumulation_steps) == (64, 16)
        assert parsed.load_universal_checkpoint is True


# ---------------------------------------------------------------------------------- data manifest


MANIFEST = {"tokenizer": {"vocab_size": 8192}, "splits": {"train": {"sources": {"web": {}, "news": {}, "books": {}}}}}


def test_vocab_size_comes_from_the_manifest_unless_set():
    cfg = composed()
    assert validate_against_manifest(cfg, MANIFEST) == 8192
    assert cfg.model.with_vocab(8192).vocab_size == 8192
    with pytest.raises(ConfigError, match="^model.vocab_size"):
        cfg.model.with_vocab()
    assert validate_against_manifest(composed("model.vocab_size=8256"), MANIFEST) == 8256  # padded
    with pytest.raises(ConfigError, match="^model.vocab_size: 4096 is smaller"):
        validate_against_manifest(composed("model.vocab_size=4096"), MANIFEST)
    with pytest.raises(ConfigError, match=r"^data.weights.code: no source 'code'"):
        validate_against_manifest(composed("+data.weights.code=1.0"), MANIFEST)


# ---------------------------------------------------------------------------- distributed environment


# `scontrol show node n1 -o` on the local test cluster (Slurm 22.05.8): the names n1, n2 do not resolve
NODE_N1 = (
    "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=2 CPUEfctv=2 CPUTot=2 CPULoad=0.41 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=localhost "
    "Port=17001 Version=22.05.8 OS=Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)  "
    "RealMemory=4000 AllocMem=0 FreeMem=20480 Sockets=2 Boards=1 State=ALLOCATED ThreadsPerCore=1 TmpDisk=0 "
    "Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  BootTime=2026-11-28T09:01:12 "
    "SlurmdStartTime=2026-11-28T14:02:33 LastBusyTime=2026-11-28T14:10:02 CfgTRES=cpu=2,mem=4000M,billing=2 "
    "AllocTRES=cpu=2 CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n"
)
# a production-style node whose name is not its address on the training network
NODE_GPU = NODE_N1.replace("NodeName=n1", "NodeName=gpu-a017").replace("NodeAddr=127.0.0.1", "NodeAddr=10.12.3.17") \
    .replace("NodeHostName=localhost", "NodeHostName=gpu-a017.cluster.internal")


class FakeScontrol:
    """Answers the two scontrol queries like Slurm does; records the calls."""

    def __init__(self, hostnames: dict[str, str], nodes: dict[str, str]):
        self.hostnames, self.nodes, self.calls = hostnames, nodes, []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if list(argv[:3]) == ["scontrol", "show", "hostnames"]:
            return self.hostnames[argv[3]]
        if list(argv[:3]) == ["scontrol", "show", "node"]:
            return self.nodes[argv[3]]
        raise AssertionError(f"unexpected command {argv}")


def no_scontrol(argv):
    raise AssertionError(f"scontrol must not be called: {argv}")


def srun_env(procid: int, localid: int, ntasks: int = 4, nodelist: str = "n[1-2]", job_id: int = 4242) -> dict:
    """What srun --nodes=2 --ntasks-per-node=2 gives a task (the variables that matter, and some that don't)."""
    return {
        "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NODELIST": nodelist, "SLURM_STEP_NODELIST": nodelist, "SLURM_NNODES": "2", "SLURM_NTASKS": str(ntasks),
        "SLURM_STEP_NUM_TASKS": str(ntasks), "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(procid // 2), "SLURMD_NODENAME": f"n{procid // 2 + 1}",
        "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_CPUS_ON_NODE": "2", "SLURM_JOB_NAME": "pretrain",
    }


def test_torchrun_env():
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
           "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "none",
           **srun_env(1, 1)}  # torchrun started by srun: torchrun's variables win
    assert detect(env, run=no_scontrol) == DistEnv(3, 1, 4, "10.0.0.5", 29400, "torchrun")


def test_deepspeed_launcher_env():
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
           "CROSS_RANK": "0", "CROSS_SIZE": "1", "LOCAL_SIZE": "2"}
    assert detect(env, run=no_scontrol) == DistEnv(1, 1, 2, "127.0.0.1", 29500, "deepspeed")


def test_the_deepspeed_launchers_local_rank_argument_is_dropped_before_hydra_sees_it():
    argv = ["train.py", "--local_rank=1", "max_steps=3", "--local_rank", "0", "model=tiny"]
    assert strip_local_rank_argument(argv) == ["train.py", "max_steps=3", "model=tiny"]


def test_plain_env_vars():
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "12345"}
    assert detect(env, run=no_scontrol) == DistEnv(0, 0, 2, "localhost", 12345, "env")


@pytest.mark.parametrize(("procid", "localid"), [(0, 0), (1, 1), (2, 0), (3, 1)])
def test_slurm_srun_env_asks_scontrol_for_the_first_nodes_address(procid, localid):
    fake = FakeScontrol({"n[1-2]": "n1\nn2\n"}, {"n1": NODE_N1})
    env = detect(srun_env(procid, localid), run=fake)
    assert env == DistEnv(procid, localid, 4, "127.0.0.1", 20000 + 4242, "slurm")
    assert fake.calls == [["scontrol", "show", "hostnames", "n[1-2]"], ["scontrol", "show", "node", "n1", "-o"]]


def test_slurm_production_style_nodelist():
    fake = FakeScontrol({"gpu-a[017-020,033]": "gpu-a017\ngpu-a018\ngpu-a019\ngpu-a020\ngpu-a033\n"}, {"gpu-a017": NODE_GPU})
    env = detect(srun_env(9, 1, ntasks=40, nodelist="gpu-a[017-020,033]", job_id=31_415_926), run=fake)
    assert (env.master_addr, env.master_port, env.world_size, env.rank) == ("10.12.3.17", 20000 + 31_415_926 % 20000, 40, 9)


def test_slurm_env_master_addr_and_port_from_env_win():
    env = {**srun_env(2, 0), "MASTER_ADDR": "10.9.9.9", "MASTER_PORT": "31000"}
    assert detect(env, run=no_scontrol) == DistEnv(2, 0, 4, "10.9.9.9", 31000, "slurm")


def test_slurm_without_scontrol_falls_back_to_the_node_name():
    def missing(argv):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.warns(RuntimeWarning, match="n1"):
        env = detect(srun_env(1, 1), run=missing)
    assert env.master_addr == "n1"


def test_slurm_batch_shell_is_one_process():
    """The batch script itself (SLURM_PROCID=0, no srun step) must not wait for 4 ranks that never come."""
    batch = {k: v for k, v in srun_env(0, 0).items() if not k.startswith("SLURM_STEP")}
    with pytest.warns(RuntimeWarning, match="not in an srun step"):
        env = detect(batch, run=no_scontrol)
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single")


def test_empty_env_is_a_single_process_on_a_free_port():
    env = detect({}, run=no_scontrol)
    assert (env.rank, env.local_rank, env.world_size, env.master_addr, env.launcher) == (0, 0, 1, "127.0.0.1", "single")
    assert 1024 < env.master_port < 65536 and env.is_main


def test_export_env_sets_what_init_distributed_needs():
    target = {"UNRELATED": "x"}
    export_env(DistEnv(3, 1, 4, "10.0.0.5", 29400, "slurm"), target)
    assert target == {"UNRELATED": "x", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
                      "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400"}
    assert detect(target, run=no_scontrol) == DistEnv(3, 1, 4, "10.0.0.5", 29400, "env")  # round trip


@pytest.mark.parametrize(("nodelist", "first"), [("n[1-2]", "n1"), ("gpu-a[017-020,033],cpu1", "gpu-a017"),
                                                 ("n2,n1", "n2"), ("rack[1-2]-node[01-04]", "rack1-node01"),
                                                 ("localhost", "localhost")])
def test_first_host(nodelist, first):
    assert first_host(nodelist) == first


def test_parse_node_addr():
    assert parse_node_addr(NODE_N1) == "127.0.0.1" and parse_node_addr(NODE_GPU) == "10.12.3.17"
    assert parse_node_addr("NodeName=x State=DOWN") is None


def test_precision_auto_is_bf16_on_gpus_and_explicit_precision_wins():
    assert ds_for("zero2", on_cpu=False)["bf16"] == {"enabled": True}
    cfg = composed("deepspeed=zero2", "deepspeed.precision=bf16")
    validate(cfg, 1)
    assert deepspeed_config(cfg, 1, on_cpu=True)["bf16"] == {"enabled": True}
