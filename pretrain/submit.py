"""`python -m pretrain.submit --nodes N --gpus-per-node G [options] [hydra overrides]`: check the
training config for the job's world size, then submit slurm/train.sbatch and say how to follow it.

Every config error (an unknown key, batch sizes that don't divide, missing shards) is reported here
rather than after the job has waited in the queue. Overrides reach the ranks verbatim: sbatch passes
script arguments without a shell, so values with spaces or quotes need no extra quoting.

  python -m pretrain.submit --nodes 2 --gpus-per-node 8 --partition gpu model=1.3b max_steps=20000
  python -m pretrain.submit --nodes 2 --ntasks-per-node 1 --dry-run deepspeed=zero3   # print, don't submit
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pretrain.config import ConfigError, TrainConfig, compose, read_manifest, validate, validate_against_manifest

SBATCH_SCRIPT = Path(__file__).resolve().parents[1] / "slurm" / "train.sbatch"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.submit", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0,
                        help="GPUs to request per node; one rank per GPU unless --ntasks-per-node says otherwise")
    parser.add_argument("--ntasks-per-node", type=int, default=None, help="ranks per node (default: --gpus-per-node, or 1)")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--time", default=None, help="time limit, e.g. 24:00:00 (default: the script's)")
    parser.add_argument("--job-name", default="pretrain")
    parser.add_argument("--signal-seconds", type=int, default=180,
                        help="USR1 this long before the time limit: enough to finish a step and write a checkpoint")
    parser.add_argument("--max-restarts", type=int, default=3,
                        help="times a failed run (a crashed or killed rank) requeues itself to resume from its last "
                             "checkpoint (stop signals requeue regardless)")
    parser.add_argument("--exclude-failed-nodes", action="store_true",
                        help="leave the nodes on which a rank died of a signal out of the requeued job")
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="extra sbatch option, repeatable (e.g. --sbatch-arg=--qos=high)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch command, submit nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for pretrain.train (key=value ...)")
    args = parser.parse_args(argv)
    for name in ("nodes", "gpus_per_node", "ntasks_per_node", "signal_seconds", "max_restarts"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("gpus_per_node", "max_restarts") else 1):
            parser.error(f"--{name.replace('_', '-')}: {value} is out of range")
    return args


def check_config(overrides: list[str], world_size: int) -> TrainConfig:
    """The composed config, validated for `world_size` ranks and against the shard manifest."""
    from hydra.errors import HydraException

    try:
        cfg = compose(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip()) from exc
    validate(cfg, world_size)
    validate_against_manifest(cfg, read_manifest(cfg))
    return cfg


def sbatch_command(args: argparse.Namespace, output_dir: Path) -> list[str]:
    tasks_per_node = args.ntasks_per_node or args.gpus_per_node or 1
    command = ["sbatch", "--parsable", f"--nodes={args.nodes}", f"--ntasks-per-node={tasks_per_node}",
               f"--job-name={args.job_name}", f"--signal=B:USR1@{args.signal_seconds}",
               f"--output={output_dir}/slurm-%j.out",
               # the ranks run this interpreter (the submitting venv), found on the shared filesystem
               f"--export=ALL,PRETRAIN_PYTHON={sys.executable},PRETRAIN_SIGNAL_MARGIN_S={args.signal_seconds},"
               f"PRETRAIN_MAX_RESTARTS={args.max_restarts},PRETRAIN_EXCLUDE_FAILED_NODES={int(args.exclude_failed_nodes)}"]
    for flag, value in (("--gpus-per-node", args.gpus_per_node or None), ("--cpus-per-task", args.cpus_per_task),
                        ("--partition", args.partition), ("--account", args.account), ("--time", args.time)):
        if value is not None:
            command.append(f"{flag}={value}")
    return command + list(args.sbatch_arg) + [str(SBATCH_SCRIPT), *args.overrides]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    world_size = args.nodes * (args.ntasks_per_node or args.gpus_per_node or 1)
    try:
        cfg = check_config(args.overrides, world_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output_dir = Path(cfg.output_dir).resolve()
    command = sbatch_command(args, output_dir)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found: submit from a Slurm login node (or --dry-run to see the command)", file=sys.stderr)
        return 1
    output_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the folder of --output
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"error: sbatch failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        return 1
    job_id = proc.stdout.strip().split(";")[0]
    print(f"submitted job {job_id}: {args.nodes} node(s) x {world_size // args.nodes} rank(s), output_dir {output_dir}\n"
          f"  follow:  tail -f {output_dir}/slurm-{job_id}.out   (squeue -j {job_id} for its state)\n"
          f"  metrics: {output_dir}/metrics.jsonl and W&B ({cfg.logging.mode})\n"
          f"  stop with a checkpoint and requeue: scancel --signal=USR1 --batch {job_id}; cancel: scancel {job_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
