"""The pipeline's W&B run: one run (`job_type="preprocess"`) made at the end of a successful run by the
command that ran or followed the stages, from report.json and the manifest, with the output folder as
its dataset artifact. Nothing here runs when `logging.mode=disabled` (wandb is then not imported).

The run folder is `<state folder>/wandb/<offline-run-...>`: the state folder (work_dir, else the local
output folder) is always a local or shared filesystem, never a bucket. Every file a record names lies
inside it, so `wandb sync <run folder>` needs nothing else."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from data_pipeline.config import PreprocessConfig
from data_pipeline.pipeline import Layout
from data_pipeline.removed_sample import REPORT_SAMPLE_PER_FILTER
from monitoring.dataset import dataset_artifact
from monitoring.wandb_run import artifact_files_folder, describe_run, open_run, staging_in_run_folder
from shard_format import manifest as manifest_lib
from shard_format import storage

JOB_TYPE = "preprocess"
DEDUP_FILTER = "dedup"  # the filter name of dedup removals in the tables; the reason is the dedup kind
HISTOGRAM_BINS = 64  # cluster sizes beyond this many distinct values share bins

FLOW_COLUMNS = ["step", "stage", "documents_in", "documents_out", "documents_removed", "bytes_in", "bytes_out",
                "cpu_seconds", "stage_peak_rss_mb"]
STAGE_COLUMNS = ["stage", "cpu_seconds", "peak_rss_mb"]
REMOVED_COLUMNS = ["source", "filter", "reason", "documents"]
SAMPLE_COLUMNS = ["filter", "reason", "source", "id", "kept", "text"]
TOKEN_COLUMNS = ["split", "source", "documents", "tokens"]
BAD_RECORD_COLUMNS = ["file", "bad_records"]


class WandbLoggingError(Exception):
    """W&B could not take the run; the pipeline's output is complete."""


@dataclass(frozen=True)
class Panels:
    """What the run shows, as plain rows (the W&B objects are made from them when logging)."""

    flow: list[list]
    stages: list[list]
    removed: list[list]
    removed_sample: list[list]
    tokens: list[list]
    bad_records: list[list]
    cluster_sizes: dict[str, dict[int, int]]  # dedup kind -> {cluster size: clusters}
    summary: dict


def build_panels(report: dict, manifest: dict) -> Panels:
    """The panels of a report. A report written before a field existed (an older run, resumed with every
    stage done) shows that column empty, not an error."""
    peaks = report["stage_peak_rss_mb"]
    flow = [[f["stage"], f.get("pipeline_stage"), f["documents_in"], f["documents_out"],
             None if f["documents_in"] is None else f["documents_in"] - f["documents_out"],
             f["bytes_in"], f["bytes_out"], f.get("cpu_seconds"), peaks.get(f.get("pipeline_stage"))]
            for f in report["flow"]]
    stages = [[stage, seconds, peaks.get(stage)] for stage, seconds in report["stage_cpu_seconds"].items()]

    filtered = report.get("removed", {"removed": [], "sample": []})
    removed = [[r["source"], r["filter"], r["reason"], r["documents"]] for r in filtered["removed"]]
    sample = [[r["filter"], r["reason"], r["source"], r["id"], None, r["text"]] for r in filtered["sample"]]
    for kind, dedup in report["dedup"].items():
        removed += [[source, DEDUP_FILTER, kind, n] for source, n in dedup.get("documents_removed_by_source", {}).items()]
        texts = dedup.get("sample_texts", {})
        sample += [[DEDUP_FILTER, kind, row["source"], row["removed"], row["kept"], texts.get(row["removed"], "")]
                   for row in dedup["sample"][:REPORT_SAMPLE_PER_FILTER]]

    tokens = [[split, source, body["documents"], body["tokens"]]
              for split, info in manifest["splits"].items() for source, body in info["sources"].items()]
    bad = report["bad_records"]
    flow_points = report["flow"]
    summary = {
        "documents_in": flow_points[0]["documents_out"] if flow_points else 0,
        "documents_out": flow_points[-1]["documents_out"] if flow_points else 0,
        **{f"tokens_{split}": info["tokens"] for split, info in manifest["splits"].items()},
        **{f"documents_{split}": info["documents"] for split, info in manifest["splits"].items()},
        "duplicates_removed": sum(d["documents_removed"] for d in report["dedup"].values()),
        "bad_records": bad["count"],
    }
    return Panels(flow=flow, stages=stages, removed=removed, removed_sample=sample, tokens=tokens,
                  bad_records=[[file, n] for file, n in bad.get("by_input_file", {}).items()],
                  cluster_sizes={kind: {int(size): n for size, n in d["cluster_sizes"].items()}
                                 for kind, d in report["dedup"].items() if d.get("cluster_sizes")},
                  summary=summary)


def size_histogram(sizes: dict[int, int]) -> tuple[list[int], list[float]]:
    """(counts, bin edges) of a {size: clusters} distribution: one bin per size while there are at most
    HISTOGRAM_BINS of them between the smallest and the largest, else HISTOGRAM_BINS equal bins."""
    values = np.array(sorted(sizes), dtype=np.int64)
    weights = np.array([sizes[v] for v in values.tolist()], dtype=np.int64)
    low, high = int(values[0]), int(values[-1])
    bins = np.arange(low, high + 2) if high - low < HISTOGRAM_BINS else HISTOGRAM_BINS
    counts, edges = np.histogram(values, bins=bins, weights=weights)
    return [int(c) for c in counts], edges.tolist()


def _history(panels: Panels) -> dict:
    import wandb

    flow = wandb.Table(columns=FLOW_COLUMNS, data=panels.flow)
    history = {
        "pipeline/flow": flow,
        "pipeline/documents_out": wandb.plot.bar(flow, "step", "documents_out", title="Documents out per step"),
        "pipeline/stages": wandb.Table(columns=STAGE_COLUMNS, data=panels.stages),
        "removed/by_filter": wandb.Table(columns=REMOVED_COLUMNS, data=panels.removed),
        "removed/sample": wandb.Table(columns=SAMPLE_COLUMNS, data=panels.removed_sample),
        "tokens/per_source": wandb.Table(columns=TOKEN_COLUMNS, data=panels.tokens),
        "bad_records/per_file": wandb.Table(columns=BAD_RECORD_COLUMNS, data=panels.bad_records),
    }
    for kind, sizes in panels.cluster_sizes.items():
        history[f"dedup/cluster_sizes/{kind}"] = wandb.Histogram(np_histogram=size_histogram(sizes))
    return history


def _run_config(cfg: PreprocessConfig) -> dict:
    config = asdict(cfg)
    # endpoint, key and secret of a bucket: none of them belongs in a dashboard
    config["storage_options"] = {key: "<redacted>" for key in config["storage_options"]}
    return config


def log_pipeline_run(cfg: PreprocessConfig, layout: Layout, report: dict) -> str | None:
    """Make the run; return the line to print about it (None when disabled). Raises WandbLoggingError."""
    if cfg.logging.mode == "disabled":
        return None
    run = None
    try:
        manifest = json.loads(storage.read_bytes(storage.join(layout.output, manifest_lib.MANIFEST_FILE),
                                                 cfg.storage_options))
        panels = build_panels(report, manifest)
        run = open_run(cfg.logging, job_type=JOB_TYPE, config=_run_config(cfg), parent_dir=str(layout.state))
        with staging_in_run_folder(run):
            run.log(_history(panels))
            run.summary.update(panels.summary)
            artifact = dataset_artifact(layout.output, artifact_files_folder(run), cfg.storage_options)
            run.summary["manifest_sha256"] = artifact.metadata["manifest_sha256"]
            run.log_artifact(artifact, aliases=["latest"])
            run.finish()
    except Exception as exc:
        if run is not None:
            with contextlib.suppress(Exception):  # the error to show is the first one
                run.finish(exit_code=1)
        first_line = str(exc).strip().partition("\n")[0]
        raise WandbLoggingError(
            f"logging.mode={cfg.logging.mode}: the W&B run could not be made ({type(exc).__name__}: {first_line}); "
            f"the pipeline's output in {layout.output} is complete: rerun the same command to log it (every stage "
            f"is done, nothing is recomputed), or set logging.mode=offline or logging.mode=disabled") from exc
    return describe_run(run, cfg.logging.mode)
