"""`python -m pretrain.submit`: the config is checked for the job's world size before anything is
submitted, and the sbatch command carries the resources and the overrides verbatim."""

import shlex
import subprocess
import sys

from .conftest import ROOT


def submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.submit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_dry_run_prints_the_sbatch_command(sample_run, tmp_path):
    proc = submit("--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--time", "01:00:00", "--dry-run",
                  "--sbatch-arg=--qos=high", f"data.path={sample_run}", f"output_dir={tmp_path}", "logging.run_name='my run: 1'")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip())
    assert argv[0] == "sbatch"
    for expected in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=01:00:00",
                     "--qos=high", "--signal=B:USR1@180", f"--output={tmp_path}/slurm-%j.out",
                     f"--export=ALL,PRETRAIN_PYTHON={sys.executable},PRETRAIN_SIGNAL_MARGIN_S=180,PRETRAIN_MAX_RESTARTS=3,"
                     "PRETRAIN_EXCLUDE_FAILED_NODES=0"):
        assert expected in argv, (expected, argv)
    script = argv.index(str(ROOT / "slurm" / "train.sbatch"))
    assert argv[script + 1:] == [f"data.path={sample_run}", f"output_dir={tmp_path}", "logging.run_name='my run: 1'"]
    assert not tmp_path.joinpath("slurm-%j.out").exists()


def test_a_batch_that_does_not_divide_the_world_size_is_refused_before_submitting(sample_run):
    proc = submit("--nodes", "3", "--dry-run", f"data.path={sample_run}", "batch.micro_batch_size=4",
                  "batch.global_batch_size=16")
    assert proc.returncode == 2 and "batch.global_batch_size" in proc.stderr and "world size 3" in proc.stderr


def test_unknown_keys_and_missing_shards_are_refused(tmp_path):
    unknown = submit("--dry-run", "optim.learning_rate=1")
    assert unknown.returncode == 2 and "learning_rate" in unknown.stderr
    missing = submit("--dry-run", f"data.path={tmp_path}")
    assert missing.returncode == 2 and "data.path" in missing.stderr and "manifest" in missing.stderr
