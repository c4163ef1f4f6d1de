"""The report and what feeds it: bad-record summaries, the peak RSS of every task, the tokenizer's training
sample per source, and the progress a run shows in a log."""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import threading

import numpy as np
import pytest
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from data_pipeline.bad_records import BadRecord, BadRecordLog, summarize_bad_records
from data_pipeline.executors import Stage, logging_dir
from data_pipeline.progress import StageCounts, StageProgress, _rates, progress_folder
from data_pipeline.report import format_report, read_stage_stats
from data_pipeline.steps.peak_memory import PEAK_RSS_STAT, PeakMemory
from data_pipeline.steps.tokenizer_training import TrainingSample

from .conftest import ROOT, SAMPLE, pipeline_command

SPEECHES = [json.loads(line) for line in gzip.open(SAMPLE / "news" / "sotu-1990-2021.jsonl.gz", "rt")]


def test_bad_record_summary_counts_every_file_and_keeps_the_first_records_in_rank_order(tmp_path):
    log = BadRecordLog(tmp_path / "work" / "bad_records")
    for rank, step in ((1, "normalize"), (0, "read")):
        for i in range(15):
            log.add(BadRecord(step, f"file{rank}.jsonl", f"line {i + 1}", "malformed JSON"), rank=rank)
    log.close()
    summary = summarize_bad_records(tmp_path / "work" / "bad_records", tmp_path, sample_size=20)
    assert summary["count"] == 30 and summary["by_step"] == {"normalize": 15, "read": 15}
    assert [(r["file"], r["location"]) for r in summary["sample"]] == \
        [("file0.jsonl", f"line {i + 1}") for i in range(15)] + [("file1.jsonl", f"line {i + 1}") for i in range(5)]
    assert summary["files"] == ["work/bad_records/00000.jsonl", "work/bad_records/00001.jsonl"]
    assert summary["by_input_file"] == {"file0.jsonl": 15, "file1.jsonl": 15} and summary["input_files"] == 2


def test_bad_record_summary_of_a_run_without_bad_records(tmp_path):
    assert summarize_bad_records(tmp_path / "missing", tmp_path) == {
        "count": 0, "by_step": {}, "by_input_file": {}, "input_files": 0, "sample": [], "files": []}


class AllocateOnFirstTask(PipelineStep):
    """Touches (then frees) 200 MB in task 0 only."""

    name = "allocate"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank == 0:
            block = np.ones(200 * 2**20, dtype=np.uint8)
            self.stat_update("allocated", value=int(block.sum() > 0))
            del block
        return
        yield


def test_peak_rss_is_each_tasks_own_when_one_process_runs_several(tmp_path):
    # workers=1: datatrove runs both tasks one after the other in this very process
    LocalPipelineExecutor([AllocateOnFirstTask(), PeakMemory()], tasks=2, workers=1,
                          logging_dir=str(tmp_path / "logs")).run()
    peaks = []
    for rank in (0, 1):
        stats = json.loads((tmp_path / "logs" / "stats" / f"{rank:05d}.json").read_text())
        [step] = [s for s in stats if s["name"].endswith("peak_memory")]
        metric = step["stats"][PEAK_RSS_STAT]
        peaks.append(metric["total"] if isinstance(metric, dict) else metric)
    assert peaks[1] > 10
    assert peaks[0] >= peaks[1] + 150  # task 1 runs after task 0 freed its 200 MB, and does not inherit them
    assert read_stage_stats(tmp_path / "logs")[1] == max(peaks)


def _documents_file(path, source: str, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t, "id": f"{source}/{i}", "metadata": {"source": source}}) + "\n"
                            for i, t in enumerate(texts)), encoding="utf-8")


def test_tokenizer_sample_is_drawn_evenly_from_every_file_within_the_cap(tmp_path):
    _documents_file(tmp_path / "00000.jsonl", "news", [s["text"] for s in SPEECHES])
    _documents_file(tmp_path / "00001.jsonl", "books", [(SAMPLE / "books" / "persuasion.txt").read_text()])
    sample = TrainingSample(sorted(tmp_path.glob("*.jsonl")), max_chars=100_000)
    texts = list(sample)
    assert sum(map(len, texts)) == 100_000 == sum(sample.chars_by_source.values())
    assert sample.chars_by_source == {"news": 50_000, "books": 50_000}


def test_tokenizer_sample_reaches_every_part_of_a_file(tmp_path):
    # one task's file: the sources one after the other, as a task that read several input files writes them
    texts = [s["text"] for s in SPEECHES]
    path = tmp_path / "00000.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for source, part in (("first", texts[:16]), ("second", texts[16:])):
            fh.write("".join(json.dumps({"text": t, "metadata": {"source": source}}) + "\n" for t in part))
    sample = TrainingSample([path], max_chars=80_000)
    list(sample)
    assert 0.3 < sample.chars_by_source["first"] / 80_000 < 0.7
    assert sum(sample.chars_by_source.values()) == 80_000


def test_tokenizer_sample_names_a_broken_documents_file(tmp_path):
    (tmp_path / "00000.jsonl").write_text('{"text": "fine"}\n{"text": unterminated\n')
    with pytest.raises(ValueError, match=r"00000.jsonl: offset 17: not a document"):
        list(TrainingSample([tmp_path / "00000.jsonl"], max_chars=1000))


class _Log(io.StringIO):
    """A log file, not a terminal, that tells when the first line came."""

    def __init__(self):
        super().__init__()
        self.written = threading.Event()

    def write(self, text):
        self.written.set()
        return super().write(text)


def test_progress_lines_without_a_terminal(tmp_path):
    stage = Stage(key="clean", name="01_clean", title="clean", pipeline=[], tasks=2)
    folder = progress_folder(tmp_path, stage)
    folder.mkdir(parents=True)
    (folder / "00000.json").write_text(json.dumps({"documents": 1500, "bytes": 3_000_000}))
    (folder / "00001.json").write_text(json.dumps({"documents": 500, "bytes": 1_000_000}))
    completions = logging_dir(tmp_path, stage) / "completions"
    completions.mkdir()
    (completions / "00000").touch()
    log = _Log()
    with StageProgress([stage], str(tmp_path), interval_s=0.05, stream=log):
        assert log.written.wait(60)
        (folder / "00001.json").write_text(json.dumps({"documents": 2500, "bytes": 5_000_000}))
        (completions / "00001").touch()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "[ 1/1] clean: 1/2 tasks, 2,000 docs, 4.0 MB, - docs/s, - MB/s"  # no rate at first sight
    assert lines[-1] == "[ 1/1] clean: done, 2/2 tasks, 4,000 docs, 8.0 MB"


def test_progress_rates_count_from_when_the_stage_was_first_seen():
    first = StageCounts(tasks_done=0, documents=1000, bytes=1_000_000, counted=True)
    now = StageCounts(tasks_done=1, documents=3000, bytes=5_000_000, counted=True)
    assert _rates(now, (10.0, first), now=12.0) == ", 1,000 docs/s, 2.0 MB/s"
    assert _rates(StageCounts(1, 0, 0, counted=False), (10.0, first), now=12.0) == ""


def _news_file(path, speeches: list[dict], bad_lines: int) -> None:
    lines = [json.dumps(s) for s in speeches] + ['{"id": "broken", "text": "unterminated'] * bad_lines
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def two_source_run(tmp_path_factory):
    """A whole run of two sources, one per task, each with 15 malformed lines; progress on, in a log."""
    root = tmp_path_factory.mktemp("two_sources")
    _news_file(root / "alpha.jsonl", SPEECHES[:16], bad_lines=15)
    _news_file(root / "beta.jsonl", SPEECHES[16:], bad_lines=15)
    out = root / "out"
    sources = (f"sources=[{{name:alpha,kind:news,paths:[{root / 'alpha.jsonl'}]}},"
               f"{{name:beta,kind:news,paths:[{root / 'beta.jsonl'}]}}]")
    command = [arg for arg in pipeline_command(out, "input_dir=null", sources, "executor.tasks=2",
                                               "tokenizer.vocab_size=512", "tokenizer.train_max_chars=200000",
                                               "progress_interval_s=0.5") if arg != "progress=false"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out, json.loads((out / "report.json").read_text()), proc


@pytest.mark.slow
def test_report_summarizes_bad_records_of_every_task(two_source_run):
    out, report, proc = two_source_run
    bad = report["bad_records"]
    assert bad["count"] == 30 and bad["by_step"] == {"read": 30}
    assert len(bad["sample"]) == 20 and all(r["file"].endswith("alpha.jsonl") for r in bad["sample"][:15])
    assert bad["files"] == ["work/bad_records/00000.jsonl", "work/bad_records/00001.jsonl"]
    assert sum(1 for f in bad["files"] for _ in open(out / f)) == 30
    assert "work/bad_records/00000.jsonl" in proc.stdout and "10 more" in proc.stdout


@pytest.mark.slow
def test_report_has_the_peak_rss_of_every_stage(two_source_run):
    out, report, proc = two_source_run
    assert set(report["stage_peak_rss_mb"]) == set(report["stage_cpu_seconds"])
    assert len(report["stage_peak_rss_mb"]) >= 10
    assert all(mb > 10 for mb in report["stage_peak_rss_mb"].values())
    assert not any(s["step"] in ("peak_memory", "progress") for s in report["steps"])
    assert "peak RSS" in format_report(report)


@pytest.mark.slow
def test_tokenizer_sample_comes_from_both_sources(two_source_run):
    out, report, proc = two_source_run
    chars = report["tokenizer_sample_chars"]
    assert set(chars) == {"alpha", "beta"} and sum(chars.values()) == 200_000
    assert 0.35 < chars["alpha"] / 200_000 < 0.65


@pytest.mark.slow
def test_progress_in_a_log_is_plain_lines_with_counts_and_rates(two_source_run):
    out, report, proc = two_source_run
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(re.match(r"\[ 1/\d+\] clean: read, extract, filter: done, 2/2 tasks, ", line) and " docs, " in line
               for line in lines)
    assert any("docs/s" in line and "MB/s" in line for line in lines)
