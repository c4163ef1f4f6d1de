"""Training on the sample shards with DeepSpeed on CPU (gloo), 1 and 2 ranks: it learns, resumes
exactly (also on another number of ranks and after kill -9), logs to W&B offline, exports."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import ROOT
from .train_runs import (ENV, assert_same_weights, background_run, deepspeed_launcher_command, logged, losses, train,
                         train_command, wait_for_step, worker_pids_by_rank)
from .wandb_records import read_run, records

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).parent / "golden" / "tiny_losses.json"


@pytest.fixture(scope="module")
def two_rank_run(sample_run, tmp_path_factory) -> Path:
    """8 steps, 2 ranks, ZeRO-2, fp32, a checkpoint every 4 steps."""
    out = tmp_path_factory.mktemp("two_rank") / "run"
    proc = train(out, sample_run, 2, "max_steps=8", "deepspeed=zero2", "deepspeed.precision=fp32")
    (out / "console.txt").write_text(proc.stdout + proc.stderr)
    return out


def test_two_rank_zero2_learns(two_rank_run):
    loss = losses(two_rank_run)
    assert sorted(loss) == list(range(1, 9))
    assert loss[8] < loss[1] - 0.5


def test_the_deepspeed_launcher_trains_like_torchrun(two_rank_run, sample_run, tmp_path):
    out = tmp_path / "deepspeed_launcher"
    proc = train(out, sample_run, 2, "max_steps=8", "deepspeed=zero2", "deepspeed.precision=fp32", "eval.every_steps=0",
                 "checkpoint.every_steps=0", "logging.mode=disabled", command=deepspeed_launcher_command)
    assert losses(out) == losses(two_rank_run)
    assert "W&B" not in proc.stdout + proc.stderr and not (out / "wandb").exists()  # disabled: no run, no path


def test_the_console_has_one_readable_line_per_log_step_and_no_library_noise(two_rank_run):
    console = (two_rank_run / "console.txt").read_text()
    steps = [line for line in console.splitlines() if line.startswith("step ") and "| loss " in line]
    assert len(steps) == 8 and re.fullmatch(
        r"step +1 \| loss \d\.\d{3} \| lr \d\.\de-\d\d \| grad norm \d+\.\d\d \| tokens/s [\d,]+ \| mfu n/a \| "
        r"tokens 2,048 \| rss \d\.\d\d GiB", steps[0]), steps[0]
    assert "all_gather_into_tensor" not in console and "Setting accelerator to CPU" not in console
    assert console.count("W&B run ") == 1 and "wandb sync" in console


def test_wandb_offline_run_holds_metrics_and_config(two_rank_run):
    runs = list((two_rank_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    history, config = read_run(runs[0])
    logged = {row["_step"]: row for row in history}
    assert {s: logged[s]["train/loss"] for s in range(1, 9)} == losses(two_rank_run)
    assert "val/loss" in logged[4] and "speed/tokens_per_s" in logged[8] and "lr" in logged[1]
    assert config["deepspeed"]["zero_stage"] == 2 and config["batch"]["micro_batch_size"] == 4


def run_records(run: Path) -> list:
    """Every record of the training run's offline W&B file(s), in job order (a resumed job adds a folder)."""
    return [r for f in sorted((run / "wandb").glob("offline-run-*/run-*.wandb")) for r in records(f)]


def rows_by_step(out: Path) -> dict[int, dict]:
    """metrics.jsonl merged per step (a step's training metrics, evaluation and checkpoint timings are rows of their own)."""
    merged: dict[int, dict] = {}
    for row in logged(out):
        if "alert" not in row:
            merged.setdefault(row["step"], {}).update(row)
    return merged


def test_the_run_uses_the_dataset_artifact_the_pipeline_logs_for_its_shards(two_rank_run, sample_run, tmp_path):
    from monitoring.dataset import dataset_artifact, manifest_sha256

    inputs = [r.artifact for r in run_records(two_rank_run)
              if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "dataset"]
    assert len(inputs) == 1 and inputs[0].use_after_commit  # logged and used: an input of the run
    expected = dataset_artifact(str(sample_run), str(tmp_path / "staging"))
    assert inputs[0].name == expected.name and inputs[0].digest == expected.digest
    # the very artifact the pipeline's own W&B run logged for these shards: one version in W&B, data -> run
    # (a test of the pipeline reruns the sample once more, logging a second run of the same output)
    logged_by_pipeline = {(r.artifact.name, r.artifact.digest) for f in (sample_run / "wandb").glob("offline-run-*/run-*.wandb")
                          for r in records(f) if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "dataset"}
    assert logged_by_pipeline == {(inputs[0].name, inputs[0].digest)}
    assert json.loads(inputs[0].metadata)["manifest_sha256"] == manifest_sha256(str(sample_run))
    state = json.loads((two_rank_run / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    assert state["data_manifest_sha256"] == manifest_sha256(str(sample_run))


def test_per_source_tokens_shares_and_losses(two_rank_run):
    rows = rows_by_step(two_rank_run)
    sources = sorted(k.split("/")[1] for k in rows[8] if k.startswith("data/") and k.endswith("/tokens"))
    assert len(sources) >= 2, rows[8]
    previous = dict.fromkeys(sources, 0)
    for step in range(1, 9):
        row = rows[step]
        tokens = {s: row[f"data/{s}/tokens"] for s in sources}
        assert sum(tokens.values()) == row["train/tokens"] == step * 8 * 256
        assert sum(row[f"data/{s}/share"] for s in sources) == pytest.approx(1.0)
        assert sum(row[f"data/{s}/weight"] for s in sources) == pytest.approx(1.0)
        # log_every=1: this step's tokens of each source weigh its loss
        of_step = {s: tokens[s] - previous[s] for s in sources}
        losses_of_step = {s: row[f"train/{s}/loss"] for s in sources if of_step[s]}
        assert set(losses_of_step) == {s for s in sources if f"train/{s}/loss" in row}
        mean = sum(losses_of_step[s] * of_step[s] for s in losses_of_step) / sum(of_step.values())
        assert mean == pytest.approx(row["train/loss"], rel=1e-5), step
        previous = tokens
    assert "val/news/loss" in rows[4]


def test_every_checkpoint_is_a_reference_artifact_with_aliases_and_metadata(two_rank_run, sample_run):
    from monitoring.dataset import manifest_sha256

    rows = rows_by_step(two_rank_run)
    models = [r.artifact for r in run_records(two_rank_run)
              if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
    assert [(a.name, sorted(a.aliases)) for a in models] == [
        (f"checkpoints-{models[0].run_id}", ["latest", f"step-{step}"]) for step in (4, 8)]
    for artifact, step in zip(models, (4, 8)):
        folder = (two_rank_run / "checkpoints" / f"step_{step:08d}").resolve()
        metadata = json.loads(artifact.metadata)
        assert metadata["step"] == step and metadata["tokens"] == rows[step]["train/tokens"]
        assert metadata["val_loss"] == rows[step]["val/loss"]
        assert metadata["data_manifest_sha256"] == manifest_sha256(str(sample_run))
        entries = artifact.manifest.contents
        assert entries and all(e.ref.startswith(folder.as_uri() + "/") and not e.local_path for e in entries)
        assert {e.path for e in entries} >= {f"step_{step:08d}/trainer_state.json", f"step_{step:08d}/COMPLETE"}


def test_the_offline_run_folder_is_self_contained(two_rank_run):
    """`wandb sync <folder>` uploads files of that folder only: every local path a record names lies in it."""
    folder = next((two_rank_run / "wandb").glob("offline-run-*")).resolve()
    local = []
    for record in run_records(two_rank_run):
        kind = record.WhichOneof("record_type")
        if kind == "artifact":
            local += [e.local_path for e in record.artifact.manifest.contents if e.local_path]
            local += [record.artifact.manifest.manifest_file_path] if record.artifact.manifest.manifest_file_path else []
        elif kind == "files":
            local += [str(folder / "files" / f.path) for f in record.files.files]
    assert local, "no file to upload: this test would prove nothing"
    outside = [p for p in local if not Path(p).resolve().is_relative_to(folder)]
    assert outside == [] and all(Path(p).is_file() for p in local)


def test_exact_resume_matches_an_uninterrupted_run(two_rank_run, sample_run, tmp_path):
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(two_rank_run / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    train(out, sample_run, 2, "max_steps=8", "deepspeed=zero2", "deepspeed.precision=fp32")
    straight, resumed = losses(two_rank_run), losses(out)
    assert sorted(resumed) == [5, 6, 7, 8]
    assert all(resumed[s] == straight[s] for s in resumed), (straight, resumed)
    assert_same_weights(two_rank_run / "checkpoints" / "step_00000008", out / "checkpoints" / "step_00000008")
    state = json.loads((out / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    first = json.loads((two_rank_run / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    assert state["data"] == first["data"] and state["wandb_run_id"] == first["wandb_run_id"]
    assert state["data_samples_per_source"] == first["data_samples_per_source"]  # carried over, not recounted
    assert (first["restarts"], state["restarts"]) == (0, 1)
    resumed_rows = rows_by_step(out)
    assert resumed_rows[5]["run/restarts"] == 1
    assert resumed_rows[8]["train/tokens"] == rows_by_step(two_rank_run)[8]["train/tokens"]
    summary = [json.loads(u.value_json) for r in run_records(out) if r.WhichOneof("record_type") == "summary"
               for u in r.summary.update if u.key == "restarts"]
    assert summary and summary[-1] == 1


def test_resume_on_one_rank_keeps_the_data_order(two_rank_run, sample_run, tmp_path):
    out = tmp_path / "one_rank"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(two_rank_run / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    # the same 8 sequences per step: 4 per micro-step, 2 micro-steps
    train(out, sample_run, 1, "max_steps=6", "deepspeed=zero2", "deepspeed.precision=fp32", "batch.global_batch_size=8")
    straight, resumed = losses(two_rank_run), losses(out)
    assert sorted(resumed) == [5, 6]
    assert resumed[5] == pytest.approx(straight[5], abs=1e-4)
    state = json.loads((out / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())
    assert state["world_size"] == 1 and state["data"]["samples_consumed"] == 6 * 8


def test_the_convert_command_prepares_a_resume_on_another_number_of_ranks(two_rank_run, sample_run, tmp_path):
    out = tmp_path / "converted"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(two_rank_run / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    conv = subprocess.run([sys.executable, "-m", "pretrain.checkpoint", "convert", str(out / "checkpoints")],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert conv.returncode == 0, conv.stderr[-3000:]
    assert (out / "checkpoints" / "step_00000004_universal" / "COMPLETE").exists()
    proc = train(out, sample_run, 1, "max_steps=5", "deepspeed=zero2", "deepspeed.precision=fp32", "batch.global_batch_size=8")
    assert "converting" not in proc.stdout  # done beforehand: the run only loads it
    assert losses(out)[5] == pytest.approx(losses(two_rank_run)[5], abs=1e-4)


def test_resume_from_one_rank_on_two(sample_run, tmp_path):
    """1 rank (2 micro-steps of 4) -> 2 ranks (1 micro-step of 4 each): the same 8 sequences per step."""
    one = tmp_path / "one"
    train(one, sample_run, 1, "max_steps=6", "deepspeed=zero2", "deepspeed.precision=fp32", "batch.global_batch_size=8",
          "eval.every_steps=0", "logging.mode=disabled")
    two = tmp_path / "two"
    (two / "checkpoints").mkdir(parents=True)
    shutil.copytree(one / "checkpoints" / "step_00000004", two / "checkpoints" / "step_00000004")
    proc = train(two, sample_run, 2, "max_steps=6", "deepspeed=zero2", "deepspeed.precision=fp32",
                 "batch.global_batch_size=8", "eval.every_steps=0", "logging.mode=disabled")
    assert "converting" in proc.stdout
    straight, resumed = losses(one), losses(two)
    assert sorted(resumed) == [5, 6]
    assert resumed[5] == pytest.approx(straight[5], abs=1e-4) and resumed[6] == pytest.approx(straight[6], abs=1e-4)


def test_two_rank_zero3_bf16_learns(sample_run, tmp_path):
    out = tmp_path / "zero3"
    train(out, sample_run, 2, "max_steps=6", "deepspeed=zero3", "deepspeed.precision=bf16", "eval.every_steps=0",
          "checkpoint.every_steps=0")
    loss = losses(out)
    assert loss[6] < loss[1] - 0.3
    assert (out / "checkpoints" / "step_00000006" / "COMPLETE").exists()


def test_an_offloaded_optimizer_steps_with_deepspeeds_cpu_adam(sample_run, tmp_path):
    out = tmp_path / "offload"
    # the first use builds DeepSpeed's cpu_adam extension (a minute or more; cached in TORCH_EXTENSIONS_DIR)
    proc = train(out, sample_run, 1, "max_steps=4", "deepspeed=zero2", "deepspeed.offload_optimizer=cpu",
                 "deepspeed.precision=fp32", "threads_per_rank=2", "eval.every_steps=0", "checkpoint.every_steps=0",
                 "logging.mode=disabled")
    assert "optimizer DeepSpeedCPUAdam, 2 CPU thread(s) per rank" in proc.stdout
    loss = losses(out)
    assert sorted(loss) == [1, 2, 3, 4] and loss[4] < loss[1]


def test_kill_9_resumes_from_the_last_complete_checkpoint(sample_run, tmp_path):
    out = tmp_path / "killed"
    cmd = train_command(out, sample_run, 1, "max_steps=400", "checkpoint.every_steps=2", "eval.every_steps=0",
                        "checkpoint.keep_last=2")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "step_00000004" / "COMPLETE").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    from pretrain.checkpoint import latest_complete

    last = latest_complete(out / "checkpoints")
    step = int(last.name.split("_")[1])
    train(out, sample_run, 1, f"max_steps={step + 2}", "checkpoint.every_steps=2", "eval.every_steps=0", "checkpoint.keep_last=2")
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert resumed[-1]["step"] == step + 2
    assert (out / "checkpoints" / f"step_{step + 2:08d}" / "COMPLETE").exists()


def test_golden_losses_of_a_fixed_tiny_config(sample_run, tmp_path):
    out = tmp_path / "golden"
    train(out, sample_run, 1, "max_steps=3", "deepspeed=zero0", "eval.every_steps=0", "checkpoint.every_steps=0",
          "logging.mode=disabled")
    got = losses(out)
    if not GOLDEN.exists():  # first run on a new format: write it, and fail so that it is reviewed
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({str(k): v for k, v in got.items()}, indent=2) + "\n")
        pytest.fail(f"wrote {GOLDEN}: review and commit it")
    expected = {int(k): v for k, v in json.loads(GOLDEN.read_text()).items()}
    assert got.keys() == expected.keys()
    for step, value in expected.items():
        assert got[step] == pytest.approx(value, abs=2e-4), step


def test_export_of_a_checkpoint_matches_transformers(two_rank_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from pretrain.checkpoint import load_model

    hf_dir = tmp_path / "hf"
    subprocess.run([sys.executable, "-m", "pretrain.export", "--checkpoint", str(two_rank_run / "checkpoints"),
                    "--out", str(hf_dir)], cwd=ROOT, check=True, capture_output=True, env=ENV)
    ours, _, _ = load_model(two_rank_run / "checkpoints")
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tokens = torch.randint(0, 2048, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, ours.eval()(tokens), atol=1e-4, rtol=1e-4)
    assert (hf_dir / "tokenizer.json").exists()


def test_generate_and_evaluate_read_a_checkpoint(two_rank_run):
    ckpt = str(two_rank_run / "checkpoints")
    gen = subprocess.run([sys.executable, "-m", "pretrain.generate", "--checkpoint", ckpt, "--prompt", "The whale",
                          "--max-new-tokens", "8", "--seed", "3"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert gen.returncode == 0 and "The whale" in gen.stdout, gen.stderr[-2000:]
    ev = subprocess.run([sys.executable, "-m", "pretrain.evaluate", "--checkpoint", ckpt, "--max-batches", "2"],
                        cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = json.loads(ev.stdout[ev.stdout.index("{"):])
    assert metrics["step"] == 8 and metrics["val/loss"] > 0 and "val/news/loss" in metrics


def test_repeated_non_finite_losses_stop_the_run_without_a_new_checkpoint(sample_run, tmp_path):
    out = tmp_path / "diverged"
    # after one update with this learning rate the weights overflow: every later loss is NaN
    proc = subprocess.run(train_command(out, sample_run, 1, "max_steps=50", "optim.lr=1e30", "optim.warmup_steps=1",
                                        "deepspeed=zero0", "eval.every_steps=0", "checkpoint.every_steps=0",
                                        "logging.mode=disabled"),
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0
    assert "not finite in 5 consecutive steps" in proc.stderr
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["train/loss"] is not None and any(r.get("train/skipped_nonfinite_steps") for r in logged)
    alerts = [r for r in logged if "alert" in r]
    assert [(a["alert"], a["level"]) for a in alerts] == [("Stopped: the loss is not finite", "ERROR")]
    assert "not finite in 5 consecutive steps" in alerts[0]["text"]
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").glob("step_*"))


def test_a_stop_signal_on_one_rank_stops_every_rank_with_a_checkpoint(sample_run, tmp_path):
    from pretrain.checkpoint import latest_complete
    from pretrain.preemption import REQUEUE_EXIT_CODE

    out, log = tmp_path / "signalled", tmp_path / "console.log"
    cmd = train_command(out, sample_run, 2, "max_steps=400", "checkpoint.every_steps=0", "eval.every_steps=0",
                        "logging.mode=disabled")
    with background_run(cmd, log) as proc:
        wait_for_step(out, 3, timeout=300, alive=lambda: proc.poll() is None)
        workers = worker_pids_by_rank(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGTERM)  # only rank 1: rank 0 learns of it at the step boundary
        proc.wait(timeout=120)
    output = log.read_text()
    last = latest_complete(out / "checkpoints")
    stopped_at = max(losses(out))
    assert last is not None and last.name == f"step_{stopped_at:08d}" and stopped_at < 400
    assert f"step {stopped_at}: stop signal (received by another rank): checkpointing and stopping" in output
    assert f"exitcode  : {REQUEUE_EXIT_CODE}" in output  # torchrun's summary of rank 1
    alerts = [r for r in logged(out) if "alert" in r]
    assert [(a["step"], a["alert"]) for a in alerts] == [(stopped_at, "Stopped by a stop signal")]
    assert f"checkpoint step {stopped_at} saved to {last}" in alerts[0]["text"] and "requeues" in alerts[0]["text"]
    assert f"ALERT step {stopped_at}: Stopped by a stop signal" in output


def test_a_rank_that_stops_answering_fails_the_run_within_the_timeout_naming_it(sample_run, tmp_path):
    out, log = tmp_path / "hung", tmp_path / "console.log"
    cmd = train_command(out, sample_run, 2, "max_steps=400", "checkpoint.every_steps=0", "eval.every_steps=0",
                        "logging.mode=disabled", "collective_timeout_minutes=0.25")
    with background_run(cmd, log) as proc:
        wait_for_step(out, 3, timeout=300, alive=lambda: proc.poll() is None)
        os.kill(worker_pids_by_rank(proc.pid)[1], signal.SIGSTOP)  # alive, but never answers again
        stopped = time.monotonic()
        proc.wait(timeout=180)
        waited = time.monotonic() - stopped
    output = log.read_text()
    assert proc.returncode != 0 and waited < 120, (waited, output[-3000:])
    assert "last heartbeat of every rank, the silent first:" in output, output[-3000:]
    report = output[output.index("last heartbeat of every rank"):]
    first, second = report.splitlines()[1:3]
    assert first.startswith("  rank 1 on ") and "SILENT: died or froze" in first, report
    assert second.startswith("  rank 0 on ") and "recent" in second, report
