"""A user's mistake ends every command with one line naming the key or file, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from .conftest import ROOT

MISTAKES = [
    (["pretrain.train", "data.path=/nonexistent"], "error: data.path: no shard manifest at /nonexistent"),
    (["pretrain.train", "no_such_key=1"], "error: no_such_key: Key 'no_such_key' not in 'TrainConfig'"),
    (["pretrain.train", "max_steps=abc"], "error: max_steps: Value 'abc' of type 'str' could not be converted"),
    (["pretrain.train", "model=13b"], "error: In 'train': Could not find 'model/13b'; available options in 'model': "
                                      "1.3b, 125m, 350m, 7b, tiny"),
    (["pretrain.train", "model.n_heads=3", "data.path=/nonexistent"], "error: model.n_heads: model.dim=128 is not divisible"),
    (["pretrain.train", "logging.mode=loud"], "error: logging.mode: 'loud': expected one of"),
    (["pretrain.submit", "--nodes", "1", "--dry-run", "data.path=/nonexistent"], "error: data.path: no shard manifest"),
    (["pretrain.generate", "--checkpoint", "/nonexistent"], "error: /nonexistent: not a complete checkpoint"),
    (["pretrain.evaluate", "--checkpoint", "/nonexistent"], "error: /nonexistent: not a complete checkpoint"),
    (["pretrain.export", "--checkpoint", "/nonexistent", "--out", "/tmp/never"], "error: /nonexistent: not a complete"),
    (["pretrain.checkpoint", "convert", "/nonexistent"], "error: /nonexistent: not a complete checkpoint"),
    (["data_pipeline", "input_dir=/nonexistent"], "error: input_dir: /nonexistent is not a directory"),
    (["data_pipeline", "shards.bogus=1"], "error: shards.bogus: Key 'bogus' not in 'ShardsConfig'"),
    (["data_pipeline", "+shards.bogus=1"], "error: shards.bogus: unknown key (not in ShardsConfig)"),
    (["data_pipeline", "executor.stages.tokenize.tme=1"], "error: executor.stages.tokenize.tme: Key 'tokenize' is not in"),
    (["data_pipeline", "executor=k8s"], "error: In 'preprocess': Could not find 'executor/k8s'"),
    (["data_pipeline", "executor.tasks=0"], "error: executor.tasks: must be positive"),
]


@pytest.mark.parametrize(("command", "expected"), MISTAKES, ids=[" ".join(c) for c, _ in MISTAKES])
def test_a_mistake_is_one_line(command, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-m", *command, *(
        [f"output_dir={tmp_path / 'out'}"] if command[0] in ("pretrain.train", "data_pipeline") else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith(expected), lines
    assert [line for line in lines if line.startswith("error")] == [lines[-1]]
