"""The run's report: per stage documents and bytes in/out, what each filter removed (per source and
reason, with a sample of the removed documents), bad records, duplicate clusters, tokens per source, the
tokenizer's training sample per source, and per stage CPU time and the peak RSS of its largest task;
saved as `report.json` and printed as a table.

It is the pipeline's last stage (so a Slurm run writes it too) and reads only files: the per-task
stats of every stage (merged from `logs/<stage>/stats/`, which also covers tasks of earlier, resumed
runs), the per-task bad-record files (streamed: counts and the first few; the files keep the full
lists), the filters' per-task removal summaries, the dedup audit summaries and the manifest.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.stats import PipelineStats, Stats

from data_pipeline.bad_records import BadRecord, summarize_bad_records
from data_pipeline.dedup import dedup_summary
from data_pipeline.progress import PROGRESS_STEP_NAME
from data_pipeline.removed_sample import removed_summary
from data_pipeline.steps.meter import METER_PREFIX
from data_pipeline.steps.peak_memory import PEAK_MEMORY_STEP_NAME, PEAK_RSS_STAT
from data_pipeline.steps.tokenizer_training import SAMPLE_CHARS_STAT
from monitoring.console import human_bytes
from shard_format import manifest as manifest_lib
from shard_format import storage

REPORT_FILE = "report.json"
BAD_RECORD_SAMPLE_SIZE = 20
_MONITOR_STEPS = (PEAK_MEMORY_STEP_NAME, PROGRESS_STEP_NAME)  # steps every stage has: not filters, not listed


def _step_label(step: Stats) -> str:
    return step.name.split(": ", 1)[-1]  # datatrove names a step's stats "<type>: <name>"


def _task_peak_rss_mb(stats: PipelineStats) -> float | None:
    for step in stats.stats:
        if _step_label(step) == PEAK_MEMORY_STEP_NAME and PEAK_RSS_STAT in step.stats:
            return _total(step.stats[PEAK_RSS_STAT])
    return None


def read_stage_stats(stage_log_dir: Path) -> tuple[PipelineStats, float | None]:
    """The stage's stats merged over its tasks, and the largest peak RSS of a task (MB; None without one)."""
    total, peak = PipelineStats(), None
    for path in sorted((stage_log_dir / "stats").glob("*.json")):
        stats = PipelineStats.from_json(json.loads(path.read_text()))
        task_peak = _task_peak_rss_mb(stats)
        if task_peak is not None:
            peak = task_peak if peak is None else max(peak, task_peak)
        total = stats if not total.stats else total + stats
    return total, peak


def _total(metric) -> float:
    """A stat as read back from JSON: a bare number, or a dict of summary values."""
    if isinstance(metric, dict):
        return metric["total"]
    return getattr(metric, "total", metric)


def build_report(state_dir: str | os.PathLike, stage_names: list[str], manifest: dict | None = None) -> dict:
    """The report of the run whose logs and work files are in `state_dir`; `manifest`: its shards' manifest."""
    root = Path(state_dir)
    # (point, stage, documents, bytes, CPU seconds of the steps since the point before)
    meters: list[tuple[str, str, float, float, float]] = []
    steps: list[dict] = []
    removed_by_filter: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    stage_times, stage_peaks = {}, {}
    sample_chars: Counter = Counter()
    for stage in stage_names:
        stats, stage_peaks[stage] = read_stage_stats(root / "logs" / stage)
        stage_times[stage] = round(sum(s.time_stats.total for s in stats.stats), 3)
        cpu_since_meter = 0.0
        for step in stats.stats:
            values = {k: _total(v) for k, v in step.stats.items()}
            label = _step_label(step)
            if label in _MONITOR_STEPS:
                continue
            for key, value in values.items():
                if key.startswith(SAMPLE_CHARS_STAT):
                    sample_chars[key[len(SAMPLE_CHARS_STAT):]] += int(value)
            if label.startswith(METER_PREFIX):
                meters.append((label[len(METER_PREFIX):], stage, values.get("documents", 0), values.get("bytes", 0),
                               cpu_since_meter + step.time_stats.total))
                cpu_since_meter = 0.0
                continue
            cpu_since_meter += step.time_stats.total
            for key, value in values.items():
                parts = key.split("/")
                if parts[0] == "removed" and len(parts) == 3:
                    removed_by_filter[parts[2]][parts[1]] += value
                elif parts[0] == "reason" and len(parts) == 3:
                    reasons[parts[1]][parts[2]] += value
            steps.append({"stage": stage, "step": label, "cpu_seconds": round(step.time_stats.total, 3),
                          "stats": {k: values[k] for k in sorted(values)}})

    # "stage": the step before the meter point; "pipeline_stage": the stage (and its task logs) it ran in
    flow = []
    for before, (point, stage, docs, size, cpu) in zip([None] + meters, meters):
        flow.append({"stage": point, "pipeline_stage": stage,
                     "documents_in": None if before is None else int(before[2]), "documents_out": int(docs),
                     "bytes_in": None if before is None else int(before[3]), "bytes_out": int(size),
                     "cpu_seconds": round(cpu, 3)})

    dedup = dedup_summary(root)

    tokens = {} if manifest is None else {
        split: {src: {"documents": v["documents"], "tokens": v["tokens"]} for src, v in info["sources"].items()}
        for split, info in manifest["splits"].items()}

    return {
        "flow": flow,
        "removed_by_filter": {f: dict(sorted(c.items())) for f, c in sorted(removed_by_filter.items())},
        "filter_reasons": {f: dict(c.most_common()) for f, c in sorted(reasons.items())},
        "removed": removed_summary(root / "work" / "removed"),
        "dedup": dedup,
        "bad_records": summarize_bad_records(root / "work" / "bad_records", root, BAD_RECORD_SAMPLE_SIZE),
        "tokens": tokens,
        "tokenizer_sample_chars": dict(sorted(sample_chars.items())),
        "steps": steps,
        "stage_cpu_seconds": stage_times,
        "stage_peak_rss_mb": stage_peaks,
    }


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]


def format_report(report: dict) -> str:
    lines = ["", "Documents and bytes per stage"]
    lines += _table(["stage", "docs in", "docs out", "removed", "bytes in", "bytes out"], [
        [f["stage"], f["documents_in"], f["documents_out"],
         None if f["documents_in"] is None else f["documents_in"] - f["documents_out"],
         human_bytes(f["bytes_in"]), human_bytes(f["bytes_out"])] for f in report["flow"]])
    if report["removed_by_filter"]:
        lines += ["", "Removed by quality filter (per profile)"]
        lines += _table(["filter", "profile", "documents", "top reasons"], [
            [f, p, int(n), ", ".join(f"{r} ({int(c)})" for r, c in list(report["filter_reasons"].get(f, {}).items())[:3])]
            for f, by_profile in report["removed_by_filter"].items() for p, n in by_profile.items()])
    lines += ["", "Deduplication (one row per removed document in work/*/audit/*.jsonl.gz)"]
    lines += _table(["kind", "documents removed", "duplicate groups"],
                    [[k, v["documents_removed"], v["duplicate_groups"]] for k, v in report["dedup"].items()])
    if report["tokens"]:
        lines += ["", "Tokens per source"]
        lines += _table(["split", "source", "documents", "tokens"],
                        [[s, src, v["documents"], v["tokens"]] for s, by_src in report["tokens"].items() for src, v in by_src.items()])
    if report["tokenizer_sample_chars"]:
        lines += ["", "Tokenizer training sample"]
        total = sum(report["tokenizer_sample_chars"].values())
        lines += _table(["source", "characters", "share"], [
            [src, chars, f"{chars / total:.0%}"] for src, chars in report["tokenizer_sample_chars"].items()])
    lines += ["", "Time and memory per stage"]
    lines += _table(["stage", "cpu seconds", "peak RSS (largest task)"], [
        [stage, seconds, _megabytes(report["stage_peak_rss_mb"].get(stage))]
        for stage, seconds in report["stage_cpu_seconds"].items()])
    bad = report["bad_records"]
    lines += ["", f"Bad records: {bad['count']}" + (f" (by step: {bad['by_step']})" if bad["count"] else "")]
    for record in bad["sample"]:
        lines.append("  " + BadRecord(**record).describe())
    if bad["count"]:
        more = f"{bad['count'] - len(bad['sample'])} more; " if bad["count"] > len(bad["sample"]) else ""
        files = bad["files"]
        where = ", ".join(files) if len(files) <= 3 else f"the {len(files)} files in {Path(files[0]).parent}/"
        lines.append(f"  ({more}the full lists, one JSON line per record: {where})")
    return "\n".join(lines) + "\n"


def _megabytes(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:,.0f} MB"


class WriteReport(PipelineStep):
    """One task: the report, from the files in the work folder, written to the output folder (or URL)."""

    name = "report"
    type = "📊 - REPORT"

    def __init__(self, state_dir: str, stage_names: list[str], output_dir: str | None = None,
                 storage_options: dict | None = None, print_table: bool = False):
        super().__init__()
        self.state_dir, self.stage_names, self.print_table = state_dir, stage_names, print_table
        self.output_dir = output_dir if output_dir is not None else state_dir
        self.storage_options = storage_options or {}

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        manifest_path = storage.join(self.output_dir, manifest_lib.MANIFEST_FILE)
        manifest = json.loads(storage.read_bytes(manifest_path, self.storage_options)) \
            if storage.exists(manifest_path, self.storage_options) else None
        report = build_report(self.state_dir, self.stage_names, manifest)
        storage.write_text_atomic(storage.join(self.output_dir, REPORT_FILE), json.dumps(report, indent=2) + "\n",
                                  self.storage_options)
        if self.print_table:  # a Slurm job's log; a local run prints it from the launching process
            print(format_report(report), flush=True)
        return
        yield
