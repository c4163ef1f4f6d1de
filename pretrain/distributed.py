"""Who am I in the job: rank, local rank, world size and rendezvous address, from the launcher.

`detect()` reads, in this order:
1. torchrun or the `deepspeed` launcher: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
2. a Slurm `srun` step: SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS); the
   master is the first node of the step's node list, at its Slurm NodeAddr (node names need not
   resolve as host names), the port MASTER_PORT or 20000 + job id % 20000;
3. otherwise a single process: rank 0 of 1 on 127.0.0.1 and a free port.
`export_env()` then sets the variables `deepspeed.init_distributed` reads (without them a single
process falls back to MPI discovery and fails on the missing mpi4py).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, MutableMapping, Optional, Sequence

# runs a command (an argv list) and returns its stdout; raises if the command fails
Runner = Callable[[Sequence[str]], str]

SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 20000


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    launcher: str  # torchrun | deepspeed | env | slurm | single

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def run_command(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=60).stdout


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}={environ[name]!r} is not an integer") from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list ("gpu[03-05,9],cpu1" -> "gpu03") without scontrol."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\],-]+)[^\]]*\]", r"\1", nodelist[:end].strip())


def parse_node_addr(scontrol_node_output: str) -> Optional[str]:
    """NodeAddr from `scontrol show node NAME -o` (one line of Key=Value fields)."""
    match = re.search(r"(?:^|\s)NodeAddr=(\S+)", scontrol_node_output)
    return match.group(1) if match else None


def slurm_master_addr(nodelist: str, run: Runner = run_command) -> str:
    """The address of the first node of `nodelist`: its NodeAddr as Slurm knows it."""
    try:
        hosts = [h.strip() for h in run(["scontrol", "show", "hostnames", nodelist]).splitlines() if h.strip()]
        if not hosts:
            raise RuntimeError(f"scontrol show hostnames {nodelist!r} printed nothing")
        addr = parse_node_addr(run(["scontrol", "show", "node", hosts[0], "-o"]))
        if addr is None:
            raise RuntimeError(f"scontrol show node {hosts[0]} printed no NodeAddr")
        return addr
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        host = first_host(nodelist)
        warnings.warn(f"could not ask Slurm for the address of {host} ({exc}); using the node name as host name "
                      f"(export MASTER_ADDR to choose)", RuntimeWarning, stacklevel=2)
        return host


def _launcher_name(environ: Mapping[str, str]) -> str:
    if "TORCHELASTIC_RUN_ID" in environ or "GROUP_RANK" in environ:
        return "torchrun"
    if "CROSS_RANK" in environ or "LOCAL_SIZE" in environ:
        return "deepspeed"
    return "env"


def detect(environ: Optional[Mapping[str, str]] = None, run: Runner = run_command) -> DistEnv:
    """The distributed environment of this process (see the module docstring). `environ` defaults to
    os.environ; `run` runs scontrol (injectable for tests)."""
    env = os.environ if environ is None else environ

    if "RANK" in env and "WORLD_SIZE" in env:
        rank = _int(env, "RANK")
        return DistEnv(
            rank=rank,
            local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            world_size=_int(env, "WORLD_SIZE"),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else 29500,
            launcher=_launcher_name(env),
        )

    # srun sets SLURM_STEP_ID / SLURM_STEP_NUM_TASKS; the batch script of an sbatch job (or an salloc
    # shell) has SLURM_PROCID=0 and SLURM_NTASKS of the whole allocation but is one process
    in_step = "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEP_NUM_TASKS" in env)
    if in_step:
        world = _int(env, "SLURM_STEP_NUM_TASKS") if "SLURM_STEP_NUM_TASKS" in env else _int(env, "SLURM_NTASKS")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif world == 1 or not nodelist:
            addr = "127.0.0.1"
        else:
            addr = slurm_master_addr(nodelist, run)
        if "MASTER_PORT" in env:
            port = _int(env, "MASTER_PORT")
        elif "SLURM_JOB_ID" in env:
            port = SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID") % SLURM_PORT_SPAN
        else:
            port = free_port() if world == 1 else 29500
        return DistEnv(rank=_int(env, "SLURM_PROCID"), local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
                       world_size=world, master_addr=addr, master_port=port, launcher="slurm")

    if "SLURM_JOB_ID" in env and env.get("SLURM_NTASKS", "1") not in ("", "1"):
        warnings.warn(f"inside Slurm job {env['SLURM_JOB_ID']} with {env['SLURM_NTASKS']} tasks but not in an srun step: "
                      "running as one process (launch with srun to use them all)", RuntimeWarning, stacklevel=2)
    addr = env.get("MASTER_ADDR", "127.0.0.1")
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port()
    return DistEnv(rank=0, local_rank=0, world_size=1, master_addr=addr, master_port=port, launcher="single")


def export_env(dist_env: DistEnv, environ: Optional[MutableMapping[str, str]] = None) -> None:
    """Set RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (os.environ by default), so that
    `deepspeed.init_distributed(dist_backend=...)` and torch's env:// rendezvous find them."""
    target = os.environ if environ is None else environ
    target.update({
        "RANK": str(dist_env.rank),
        "LOCAL_RANK": str(dist_env.local_rank),
        "WORLD_SIZE": str(dist_env.world_size),
        "MASTER_ADDR": dist_env.master_addr,
        "MASTER_PORT": str(dist_env.master_port),
    })


def strip_local_rank_argument(argv: Sequence[str]) -> list[str]:
    """argv without the `--local_rank=N` (or `--local_rank N`) the `deepspeed` launcher appends, which
    Hydra would reject as an override: the launcher also exports LOCAL_RANK, which detect() reads."""
    out: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--local_rank":
            skip_next = True
        elif not arg.startswith("--local_rank="):
            out.append(arg)
    return out
