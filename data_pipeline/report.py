"""The run's report: per stage documents and bytes in/out, what each filter removed, bad records,
duplicate clusters and tokens per source; saved as `report.json` and printed as a table.

It is the pipeline's last stage (so a Slurm run writes it too) and reads only files: the per-task
stats of every stage (merged from `logs/<stage>/stats/`, which also covers tasks of earlier, resumed
runs), the bad-record logs, the dedup audit parts and the manifest.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.stats import PipelineStats

from data_pipeline import manifest as manifest_lib
from data_pipeline.bad_records import read_bad_records
from data_pipeline.dedup import dedup_summary
from data_pipeline.steps.meter import METER_PREFIX

REPORT_FILE = "report.json"


def merged_stage_stats(stage_log_dir: Path) -> PipelineStats:
    total = PipelineStats()
    for path in sorted((stage_log_dir / "stats").glob("*.json")):
        stats = PipelineStats.from_json(json.loads(path.read_text()))
        total = stats if not total.stats else total + stats
    return total


def _total(metric) -> float:
    """A stat as read back from JSON: a bare number, or a dict of summary values."""
    if isinstance(metric, dict):
        return metric["total"]
    return getattr(metric, "total", metric)


def build_report(output_dir: str | os.PathLike, stage_names: list[str]) -> dict:
    root = Path(output_dir)
    meters: list[tuple[str, float, float]] = []
    steps: list[dict] = []
    removed_by_filter: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    stage_times = {}
    for stage in stage_names:
        stats = merged_stage_stats(root / "logs" / stage)
        stage_times[stage] = round(sum(s.time_stats.total for s in stats.stats), 3)
        for step in stats.stats:
            values = {k: _total(v) for k, v in step.stats.items()}
            label = step.name.split(": ", 1)[-1]
            if label.startswith(METER_PREFIX):
                meters.append((label[len(METER_PREFIX):], values.get("documents", 0), values.get("bytes", 0)))
                continue
            for key, value in values.items():
                parts = key.split("/")
                if parts[0] == "removed" and len(parts) == 3:
                    removed_by_filter[parts[2]][parts[1]] += value
                elif parts[0] == "reason" and len(parts) == 3:
                    reasons[parts[1]][parts[2]] += value
            steps.append({"stage": stage, "step": label, "cpu_seconds": round(step.time_stats.total, 3),
                          "stats": {k: values[k] for k in sorted(values)}})

    flow = []
    for (prev_point, prev_docs, prev_bytes), (point, docs, size) in zip(meters, meters[1:]):
        flow.append({"stage": point, "documents_in": int(prev_docs), "documents_out": int(docs),
                     "bytes_in": int(prev_bytes), "bytes_out": int(size)})
    if meters:
        point, docs, size = meters[0]
        flow.insert(0, {"stage": point, "documents_in": None, "documents_out": int(docs), "bytes_in": None, "bytes_out": int(size)})

    dedup = dedup_summary(root)

    bad = read_bad_records(root / "work" / "bad_records")
    try:
        manifest = manifest_lib.read(root)
        tokens = {split: {src: {"documents": v["documents"], "tokens": v["tokens"]} for src, v in info["sources"].items()}
                  for split, info in manifest["splits"].items()}
    except FileNotFoundError:
        tokens = {}

    return {
        "flow": flow,
        "removed_by_filter": {f: dict(sorted(c.items())) for f, c in sorted(removed_by_filter.items())},
        "filter_reasons": {f: dict(c.most_common()) for f, c in sorted(reasons.items())},
        "dedup": dedup,
        "bad_records": {"count": len(bad), "by_step": dict(Counter(b.step for b in bad)),
                        "records": [b.__dict__ for b in bad]},
        "tokens": tokens,
        "steps": steps,
        "stage_cpu_seconds": stage_times,
    }


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


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
         _human_bytes(f["bytes_in"]), _human_bytes(f["bytes_out"])] for f in report["flow"]])
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
    bad = report["bad_records"]
    lines += ["", f"Bad records: {bad['count']}" + (f" (by step: {bad['by_step']})" if bad["count"] else "")]
    for record in bad["records"][:20]:
        where = f"{record['file']}:{record['location']}" if record["location"] else record["file"]
        lines.append(f"  [{record['step']}] {where}: {record['error']}")
    if bad["count"] > 20:
        lines.append(f"  ... {bad['count'] - 20} more in report.json")
    return "\n".join(lines) + "\n"


class WriteReport(PipelineStep):
    name = "report"
    type = "📊 - REPORT"

    def __init__(self, output_dir: str, stage_names: list[str], print_table: bool = False):
        super().__init__()
        self.output_dir, self.stage_names, self.print_table = output_dir, stage_names, print_table

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        report = build_report(self.output_dir, self.stage_names)
        path = Path(self.output_dir) / REPORT_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        if self.print_table:  # a Slurm job's log; a local run prints it from the launching process
            print(format_report(report), flush=True)
        return
        yield
