"""Checkpoints: DeepSpeed's sharded state plus the trainer's own (step, data state, RNG, W&B run id).

A checkpoint is `<dir>/step_00000100/`. Every rank writes its part, then rank 0 writes
`trainer_state.json` and, last, the `COMPLETE` marker: a crash at any point of a save leaves a folder
without the marker, which `latest_complete` ignores and the next save of that step replaces.
Resuming on another number of ranks goes through DeepSpeed's universal checkpoint format.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pretrain import collectives
from shard_format.atomic import write_text_atomic
from shard_format.cli import exit_on_user_error
from shard_format.errors import InputError

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_tag(step: int) -> str:
    return f"step_{step:08d}"


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / COMPLETE).exists()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_complete(root: str | os.PathLike) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: str, root: str | os.PathLike) -> Path | None:
    """`auto`: the latest complete checkpoint under `root`, if any; `none`: start fresh; else a path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_complete(root)
    path = Path(resume)
    if not (path / COMPLETE).exists():
        raise InputError(f"checkpoint.resume: {path} is not a complete checkpoint (no {COMPLETE} marker)")
    return path


def read_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def begin_save(engine, root: str | os.PathLike, step: int, rank: int) -> Path:
    """Collective: every rank calls it at the same step. With a `BackgroundWriter` as the engine's checkpoint
    engine this returns once the state is copied to host memory, the files still being written; call
    `finish_save` (after `engine.checkpoint_engine.wait()` on every rank) to mark it complete."""
    root = Path(root)
    path = root / step_tag(step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # an earlier attempt at this step that did not complete
            shutil.rmtree(path)
    collectives.barrier()
    engine.save_checkpoint(str(root), tag=step_tag(step))
    engine.checkpoint_engine.save(rng_state(), str(path / f"rng_rank{rank:05d}.pt"))
    return path


def writes_in_background(engine) -> bool:
    """Whether the engine's checkpoint engine is a `BackgroundWriter` (files still being written after a save)."""
    return callable(getattr(engine.checkpoint_engine, "wait", None))


def finish_save(engine, path: Path, step: int, trainer_state: dict, rank: int, keep_last: int) -> None:
    """Collective: once every rank's files of `path` are durable, rank 0 writes the trainer state and then
    the `COMPLETE` marker, and prunes checkpoints beyond `keep_last`."""
    if writes_in_background(engine):
        engine.checkpoint_engine.wait()
    collectives.barrier()
    if rank == 0:
        write_text_atomic(path / STATE_FILE, json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")
        write_text_atomic(path / COMPLETE, f"{step}\n")
        root = path.parent
        for old in complete_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(old.with_name(old.name + "_universal"), ignore_errors=True)
    collectives.barrier()


def universal_path(path: Path) -> Path:
    return path.with_name(path.name + "_universal")


FAILED = "FAILED"
_WAIT_REPORT_S = 60
_STALE_SLACK_S = 30  # ranks of one launch start within this of each other


def convert(path: Path, extract_workers: int = 4, merge_workers: int = 2) -> Path:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (to resume on another number of ranks),
    once: into a temporary folder renamed into place, then the `COMPLETE` marker. A failure leaves a
    `FAILED` marker (with the error) for the ranks waiting on it. Returns the universal folder."""
    out = universal_path(path)
    if (out / COMPLETE).exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (out / FAILED).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(path),
           "--output_folder", str(tmp), "--inject_missing_state", "--num_extract_workers", str(extract_workers),
           "--num_merge_workers", str(merge_workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        message = f"converting {path} to a universal checkpoint failed:\n{proc.stderr[-3000:]}"
        write_text_atomic(out / FAILED, message + "\n")
        raise RuntimeError(message)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    write_text_atomic(out / COMPLETE, "universal\n")
    return out


def ensure_universal(path: Path, rank: int, since: float) -> Path:
    """Before the ranks rendezvous: rank 0 converts `path` (see `convert`), the others wait for its marker
    on the shared file system. The wait is a file poll, not a collective: it cannot time out however long
    the conversion of a large model takes (`python -m pretrain.checkpoint convert` does it beforehand).
    `since`: when this launch started (time.time()); a FAILED marker older than that is a stale one."""
    out = universal_path(path)
    if rank == 0:
        if not (out / COMPLETE).exists():
            print(f"converting {path} to a universal checkpoint (resuming on another number of ranks) ...", flush=True)
        return convert(path)
    start = last_report = time.monotonic()
    while not (out / COMPLETE).exists():
        failed = out / FAILED
        if failed.exists() and failed.stat().st_mtime >= since - _STALE_SLACK_S:
            raise RuntimeError(failed.read_text(encoding="utf-8"))
        if time.monotonic() - last_report > _WAIT_REPORT_S:
            print(f"rank {rank}: waiting for rank 0 to convert {path} ({time.monotonic() - start:.0f} s)", flush=True)
            last_report = time.monotonic()
        time.sleep(1.0)
    return out


def load(engine, path: Path, rank: int, universal: bool) -> dict:
    """Load model, optimizer and scheduler state into the engine; restore this rank's RNG state.
    Returns the trainer state (step, data state, W&B run id, ...)."""
    tag_path = universal_path(path) if universal else path
    load_path, _ = engine.load_checkpoint(str(tag_path.parent), tag=tag_path.name, load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint {tag_path}")
    rng_file = path / f"rng_rank{rank:05d}.pt"
    if rng_file.exists():  # a rank that did not exist before the world size changed starts from its seed
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_state(path)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the latest complete one in a checkpoints folder."""
    path = Path(path)
    if (path / COMPLETE).exists():
        return path
    latest = latest_complete(path)
    if latest is None:
        raise InputError(f"{path}: not a complete checkpoint, and no complete checkpoint in it")
    return latest


def consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of the whole model from a (possibly ZeRO-partitioned) DeepSpeed checkpoint."""
    if list(path.glob("*zero_pp_rank_*optim_states.pt")):
        from pretrain.engine import quiet_deepspeed_start

        quiet_deepspeed_start()
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
    states = torch.load(path / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in states["module"].items()}


def load_model(path: str | os.PathLike):
    """(model in fp32 on CPU, its ModelConfig, the trainer state) of a checkpoint, for tools."""
    from pretrain.config import ModelConfig
    from pretrain.model import Transformer

    path = resolve_checkpoint(path)
    state = read_state(path)
    cfg = ModelConfig.from_dict(state["model_config"])
    model = Transformer(cfg)
    model.load_state_dict(consolidated_state_dict(path), strict=True)
    return model, cfg, state


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pretrain.checkpoint",
                                     description="Checkpoint tools: convert a checkpoint to the universal format")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="convert to DeepSpeed's universal format (to resume on another "
                                               "number of ranks; resume=auto does it too, before the rendezvous)")
    conv.add_argument("checkpoint", help="a checkpoint folder (step_XXXXXXXX) or the checkpoints folder (latest)")
    conv.add_argument("--extract-workers", type=int, default=4, help="parallel processes extracting ZeRO shards")
    conv.add_argument("--merge-workers", type=int, default=2, help="parallel processes merging (memory-hungry)")
    args = parser.parse_args(argv)
    path = resolve_checkpoint(args.checkpoint)
    start = time.monotonic()
    try:
        out = convert(path, args.extract_workers, args.merge_workers)
    except RuntimeError as exc:  # a conversion worker failed: its message says which file
        sys.exit(f"error: {exc}")
    print(f"{out} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
