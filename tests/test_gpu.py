"""What only a GPU can show (skipped without CUDA, so CI stays CPU-only; bench/gpu_check.sh runs them):
batches on the device from pinned memory, our collectives beside NCCL, a bf16 DeepSpeed step, and the
flash attention kernel chosen for the model's grouped-query attention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.data import DataConfig, build_train_batches
from pretrain.device_batches import DeviceBatches
from pretrain.engine import attention_backend
from pretrain.model import ModelConfig
from pretrain.trainer import Trainer

from .conftest import ROOT
from .test_device_paths import check_ranks, rank_in_a_group_that_refuses_cpu_tensors
from .train_runs import ENV, free_port, losses

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Random-token shards (numpy only: the GPU machine needs none of the data pipeline's dependencies)."""
    out = tmp_path_factory.mktemp("gpu_shards")
    subprocess.run([sys.executable, "-m", "bench.synthetic_shards", "--out", str(out), "--tokens", "2000000",
                    "--vocab", "32000", "--doc-tokens", "1024"], cwd=ROOT, check=True, capture_output=True)
    return out


def test_batches_arrive_on_the_gpu_from_pinned_memory(shards):
    batches = DeviceBatches(build_train_batches(DataConfig(str(shards), 128), 4), "cuda")
    try:
        inputs, targets = next(batches)
        assert batches.pinned and inputs.device.type == targets.device.type == "cuda"
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
    finally:
        batches.close()


def test_a_training_step_queues_its_work_without_a_host_sync(shards):
    from .test_device_paths import SEQ, StandInEngine, tiny_model

    loader = build_train_batches(DataConfig(str(shards), SEQ), 4)
    batches = DeviceBatches(loader, "cuda")
    engine = StandInEngine(tiny_model(loader.dataset.vocab_size).cuda(), torch.device("cuda"), grad_accum=2)
    trainer = Trainer(engine, batches, grad_accum=2, max_steps=10, log_every=2)  # steps 2 and 4: per-source losses
    try:
        trainer.train_step()  # warm-up: the first pinned allocations and kernel loads
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call now raises
        try:
            results = [trainer.train_step() for _ in range(3)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(r.loss.device.type == "cuda" for r in results)
        assert [r.source_losses is not None for r in results] == [True, False, True]
        assert results[0].source_losses.device.type == "cuda"
    finally:
        batches.close()


def test_loop_evaluation_and_stop_agreement_beside_nccl(shards, tmp_path):
    rank_in_a_group_that_refuses_cpu_tensors(0, 1, free_port(), str(shards), str(tmp_path), backend="nccl",
                                             device="cuda:0")
    check_ranks(tmp_path, 1)


def test_flash_attention_serves_the_grouped_query_attention_of_the_presets():
    for preset_kv_heads in (8, 32):  # 1.3b (GQA 4:1), 7b (MHA)
        cfg = ModelConfig(vocab_size=32000, dim=2048, n_layers=1, n_heads=32, n_kv_heads=preset_kv_heads)
        assert attention_backend(cfg, 2048, torch.bfloat16, torch.device("cuda")) == "FLASH_ATTENTION"


def test_a_bf16_zero2_run_learns_and_names_its_kernel(shards, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pretrain.train", f"data.path={shards}", f"output_dir={out}",
                           "model=tiny", "model.vocab_size=32000", "deepspeed=zero2", "deepspeed.precision=bf16",
                           "max_steps=30", "optim.lr=3e-3", "optim.warmup_steps=5", "batch.micro_batch_size=8",
                           "logging.mode=disabled", "logging.log_every=1", "eval.every_steps=0",
                           "checkpoint.every_steps=0"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "device cuda:0: attention kernel FLASH_ATTENTION" in proc.stdout
    loss = losses(out)
    assert len(loss) == 30 and loss[30] < loss[1] - 0.5
