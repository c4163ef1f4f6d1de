"""The real Slurm cluster the `slurm`-marked tests submit to (started by slurm/local_cluster/start.sh,
which .ci/run runs before the tests), and helpers to follow its jobs."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest

START_HINT = "start it with: bash slurm/local_cluster/start.sh (as root)"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}


def _run(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass
class SlurmCluster:
    partition: str
    nodes: list[str]

    @staticmethod
    def connect() -> "SlurmCluster":
        """The running cluster; skips the test when Slurm is not installed at all, fails when it is
        installed but not answering (a broken cluster must not pass as a skipped test)."""
        if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
            pytest.skip(f"Slurm is not installed; {START_HINT}")
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t %P"], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            pytest.fail(f"Slurm is installed but not answering (sinfo: {proc.stderr.strip()}); {START_HINT}")
        rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
        usable = [r for r in rows if r[1].rstrip("*") in ("idle", "mix", "alloc", "comp")]
        if len(usable) < 2:
            pytest.fail(f"the Slurm cluster needs 2 usable nodes, sinfo shows {rows}; {START_HINT}")
        return SlurmCluster(partition=usable[0][2].rstrip("*"), nodes=sorted({r[0] for r in usable}))

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` fields of a job (of its first element for an array)."""
        out = _run("scontrol", "show", "job", "-o", str(job_id))
        first = out.splitlines()[0]
        return dict(re.findall(r"(\w+)=(\S*)", first))

    def max_array_size(self) -> int:
        """The cluster's MaxArraySize: a job array's indices must stay below it."""
        return int(re.search(r"^MaxArraySize\s*=\s*(\d+)", _run("scontrol", "show", "config"), re.MULTILINE).group(1))

    def jobs_writing_under(self, folder) -> list[dict[str, str]]:
        """`scontrol show job` rows (one per array element once it started, one per array before) of the
        jobs whose output goes under `folder`: those of one pipeline run, whatever else the cluster runs."""
        out = _run("scontrol", "show", "job", "-o")
        rows = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]
        return [row for row in rows if row.get("StdOut", "").startswith(str(folder))]

    def state(self, job_id: str) -> str:
        return self.job(job_id)["JobState"]

    def wait(self, job_id: str, timeout: float, states: set[str] = FINAL_STATES) -> dict[str, str]:
        """Poll until the job reaches one of `states`; its fields then. Fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in states:
                return info
            if time.monotonic() > deadline:
                subprocess.run(["scancel", str(job_id)], timeout=30)
                pytest.fail(f"Slurm job {job_id} still {info['JobState']} after {timeout:.0f}s (cancelled it)")
            time.sleep(0.5)
