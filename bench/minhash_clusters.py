"""Peak memory and time of the MinHash clusters stage: datatrove's `MinhashDedupCluster` vs `FastMinhashDedupCluster`
(data_pipeline/fast/minhash_clusters.py), on synthetic pairs files laid out like `MinhashDedupBuckets` writes them.

Documents (spread over `--files` signature files) fall into clusters of 2 to a few thousand; each of `--buckets`
pairs files holds, cluster after cluster in random order, the chain of consecutive (file, doc)-sorted members that
collide in that bucket (each member collides with probability 0.9). Each step runs in its own child process; its
peak resident set, less that of a child that only imports the same modules, is divided by the documents in a pair.
Asserts that both write the same files.

    python -m bench.minhash_clusters                  # 1,000,000 documents, about 3 million pairs
    python -m bench.minhash_clusters --docs 2000000 --buckets 8
    python -m bench.minhash_clusters --smoke
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("stock", "fast")


def write_pairs(folder: Path, docs: int, files: int, buckets: int, seed: int) -> int:
    """Writes `buckets` pairs files; returns the number of pairs."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.zipf(1.8, size=docs) + 1, 5000)
    sizes = sizes[np.cumsum(sizes) <= docs]
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    key = rng.permutation(files * (docs // files + 1))[: len(cluster)].astype(np.uint64)
    file_and_doc = np.column_stack([key % np.uint64(files), key // np.uint64(files)]).astype(np.uint32)
    key = (file_and_doc[:, 0].astype(np.uint64) << np.uint64(32)) | file_and_doc[:, 1]
    folder.mkdir(parents=True)
    total = 0
    for bucket in range(buckets):
        colliding = np.flatnonzero(rng.random(len(cluster)) < 0.9)
        cluster_order = rng.permutation(len(sizes))[cluster[colliding]]
        colliding = colliding[np.lexsort((key[colliding], cluster_order))]
        linked = np.flatnonzero(cluster[colliding][1:] == cluster[colliding][:-1])
        pairs = np.column_stack([file_and_doc[colliding[linked]], file_and_doc[colliding[linked + 1]]])
        (folder / f"{bucket:05d}_00.dups").write_bytes(pairs.astype("<u4").tobytes())
        total += len(pairs)
    return total


def run_step(step: str, pairs: Path, out: Path, buckets: int) -> None:
    """Runs inside the child: imports both steps (the baseline child stops there), then runs one."""
    from datatrove.pipeline.dedup import MinhashDedupCluster
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    from data_pipeline.fast.minhash_clusters import FastMinhashDedupCluster

    start = time.perf_counter()
    if step != "baseline":
        cls = FastMinhashDedupCluster if step == "fast" else MinhashDedupCluster
        cls(str(pairs), str(out), config=MinhashConfig(num_buckets=buckets), save_cluster_id=True).run()
    print(f"{time.perf_counter() - start:.3f} {peak_rss_kib()}")


def peak_rss_kib() -> int:
    """This process's peak resident set since it started its program. Not `ru_maxrss`: Linux carries that over
    from the parent through fork and exec, so a child of a large parent would report the parent's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(step: str, pairs: Path, out: Path, buckets: int) -> tuple[float, float]:
    """(seconds the step took, peak RSS of its child in MiB)."""
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, __file__, "--child", step, str(pairs), str(out), str(buckets)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{step} step failed:\n{proc.stderr[-3000:]}")
    seconds, peak_kib = proc.stdout.split()[-2:]
    return float(seconds), int(peak_kib) / 1024


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_step(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="documents that fall into clusters")
    parser.add_argument("--files", type=int, default=64, help="signature files (tasks) the documents come from")
    parser.add_argument("--buckets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="20,000 documents")
    args = parser.parse_args()
    docs = 20_000 if args.smoke else args.docs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n_pairs = write_pairs(work / "pairs", docs, args.files, args.buckets, args.seed)
        _, baseline_mib = measure("baseline", work / "pairs", work / "none", args.buckets)
        seconds, peak = {}, {}
        for step in STEPS:
            seconds[step], peak[step] = measure(step, work / "pairs", work / step, args.buckets)
        if folder_bytes(work / "fast") != folder_bytes(work / "stock"):
            raise SystemExit("the cluster files differ from datatrove's")
        in_pairs = sum(len(np.fromfile(p, dtype="<u4")) // 2 for p in (work / "stock").glob("*.clusters"))
    print(f"{n_pairs:,} pairs among {in_pairs:,} documents, {args.buckets} pairs files; same files as datatrove's")
    print(f"{'step':<32}{'seconds':>10}{'peak MiB':>10}{'bytes/doc':>11}   (peak less the {baseline_mib:.0f} MiB after imports)")
    for step, label in zip(STEPS, ("datatrove MinhashDedupCluster", "FastMinhashDedupCluster")):
        extra = max(peak[step] - baseline_mib, 0.0)
        print(f"{label:<32}{seconds[step]:>10.2f}{extra:>10.1f}{extra * 2**20 / in_pairs:>11.1f}")
    stock_extra, fast_extra = peak["stock"] - baseline_mib, max(peak["fast"] - baseline_mib, 1e-9)
    print(f"ratio: {stock_extra / fast_extra:.1f}x less memory, {seconds['stock'] / seconds['fast']:.1f}x faster")


if __name__ == "__main__":
    main()
