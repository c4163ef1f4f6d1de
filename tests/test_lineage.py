"""A resume on other data (another manifest sha256) is refused before anything is built, naming both
data folders, both sha256s and the key, unless data.allow_changed=true."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from monitoring.dataset import manifest_sha256
from pretrain.config import DataConfig
from pretrain.lineage import DATA_SHA256, check_resume_data
from shard_format.errors import ConfigError

from .conftest import ROOT
from .train_runs import ENV, train_command

OLD, NEW = "a" * 64, "b" * 64


def test_other_data_is_refused_unless_allowed():
    state = {DATA_SHA256: OLD, "data_path": "/data/old"}
    with pytest.raises(ConfigError) as info:
        check_resume_data(DataConfig(path="/data/new"), NEW, state, "/ck/step_00000004")
    message = str(info.value)
    assert message.startswith("data.path: ")
    for part in ("/data/new", NEW, "/data/old", OLD, DATA_SHA256, "/ck/step_00000004", "data.allow_changed=true"):
        assert part in message
    warning = check_resume_data(DataConfig(path="/data/new", allow_changed=True), NEW, state, "/ck/step_00000004")
    assert warning.startswith("warning: resuming on other data") and OLD in warning and NEW in warning
    assert check_resume_data(DataConfig(path="/data/moved"), OLD, state, "ck") is None  # same data, moved
    assert check_resume_data(DataConfig(path="/data/new"), NEW, {"data_path": "/data/old"}, "ck") is None  # older state


def test_the_trainer_refuses_a_checkpoint_of_other_data_before_building_anything(sample_run, tmp_path):
    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "step_00000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps(
        {"step": 4, DATA_SHA256: OLD, "data_path": "/data/old", "world_size": 1, "global_batch_size": 4}))
    (checkpoint / "COMPLETE").write_text("4\n")
    start = time.monotonic()
    proc = subprocess.run(train_command(out, sample_run, 1, "max_steps=8"), cwd=ROOT, capture_output=True, text=True,
                          env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - start < 60
    for part in (str(sample_run), manifest_sha256(str(sample_run)), "/data/old", OLD, DATA_SHA256):
        assert part in proc.stderr
    assert "W&B run" not in proc.stdout and not (out / "wandb").exists()  # refused before the run was opened
