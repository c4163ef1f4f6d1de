"""The per-rank memory estimate: DeepSpeed's own accounting of model states, a planning command that
builds nothing, and a refusal in seconds, naming what to change, when a run would not fit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pretrain import memory
from pretrain.config import compose
from pretrain.model import num_params_from_config

from .conftest import ROOT
from .train_runs import ENV

GIB = memory.GIB


def planned(*overrides: str):
    cfg = compose(["model=7b", "model.vocab_size=32000", *overrides])
    return cfg, cfg.model.with_vocab().validate()


def model_states(est: memory.MemoryEstimate) -> float:
    return est.parameters + est.gradients + est.optimizer_states


@pytest.mark.parametrize("world", [1, 8, 64])
def test_zero2_bf16_model_states_are_deepspeeds_estimate(world):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cfg, m = planned("deepspeed=zero2")
    ours = memory.estimate(m, cfg, world, 1, bf16=True)
    _, gpu = estimate_zero2_model_states_mem_needs(num_params_from_config(m), num_gpus_per_node=world, cpu_offload=False)
    assert model_states(ours) == pytest.approx(gpu, abs=1)


@pytest.mark.parametrize("world", [8, 64])
def test_zero3_counts_the_16_bit_partition_deepspeeds_estimator_leaves_out(world):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cfg, m = planned("deepspeed=zero3")
    ours = memory.estimate(m, cfg, world, 1, bf16=True)
    params = num_params_from_config(m)
    largest = m.vocab_size * m.dim
    _, gpu, _ = estimate_zero3_model_states_mem_needs(params, largest, num_gpus_per_node=world, cpu_offload=False,
                                                       cpu_offload_params=False)
    assert model_states(ours) == pytest.approx(gpu + 2 * params / world, abs=1)


def test_partitioning_offload_and_checkpointing_shrink_what_they_should():
    cfg2, m = planned("deepspeed=zero2")
    cfg3, _ = planned("deepspeed=zero3")
    offload, _ = planned("deepspeed=zero3_offload")
    ckpt, _ = planned("deepspeed=zero3", "activation_checkpointing=true")
    z2, z3 = memory.estimate(m, cfg2, 8, 1, True), memory.estimate(m, cfg3, 8, 1, True)
    assert z2.parameters == 2 * num_params_from_config(m) and z3.parameters < z2.parameters / 4
    off = memory.estimate(m, offload, 8, 1, True)
    assert off.optimizer_states == 0 and off.host > z3.optimizer_states and off.parameters < z3.parameters
    assert memory.estimate(m, ckpt, 8, 1, True).activations < z3.activations / 5
    assert memory.estimate(m, cfg3, 8, 2, True).activations == pytest.approx(2 * z3.activations)


def run_train(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.train", *overrides], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=300)


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
@pytest.mark.parametrize("world", [8, 64])
def test_estimate_only_plans_the_7b_preset_without_data_or_a_gpu(zero, world):
    proc = run_train("model=7b", "model.vocab_size=32000", f"deepspeed={zero}", "estimate_only=true",
                     f"memory.world_size={world}", "memory.device_gib=80", "data.path=/nonexistent")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"6.74B parameters, ZeRO-{zero[-1]}, bf16, {world} ranks" in out
    for row in ("parameters", "gradients", "optimizer states", "activations (estimate)", "total on the device"):
        assert row in out
    assert "device memory 80.0 GiB:" in out and "attention kernel" not in out  # nothing was built


def test_a_run_that_does_not_fit_is_refused_before_anything_is_built(sample_run):
    # 1.3b in fp32 (a CPU) on one rank: 19 GiB of model states; with the optimizer offloaded, 9 GiB
    proc = run_train(f"data.path={sample_run}", "output_dir=/tmp/never-written", "model=1.3b", "deepspeed=zero2",
                     "batch.micro_batch_size=1", "data.seq_len=256", "memory.device_gib=12", "logging.mode=disabled")
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: memory.device_gib: the estimate") and "exceeds the device's 12.0 GiB" in error
    assert "deepspeed.offload_optimizer=cpu" in error and "memory.check=false" in error
    assert "attention kernel" not in proc.stdout


def test_when_no_single_change_fits_the_shortest_combination_is_named():
    cfg, m = planned("deepspeed=zero2", "batch.micro_batch_size=4")
    options = memory.alternatives(m, cfg, 1, 4, True, device_gib=32)
    assert options == ["activation_checkpointing=true together with batch.micro_batch_size=1 (grad_accum_steps grows "
                       "with batch.global_batch_size kept) together with deepspeed=zero3 together with "
                       "deepspeed.offload_optimizer=cpu"]
