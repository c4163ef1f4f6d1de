"""The pipeline's W&B run on the bundled sample (logging=offline, the default): read back from the offline
run file and the run folder, as `wandb sync` would upload them."""

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from data_pipeline.wandb_log import (BAD_RECORD_COLUMNS, DEDUP_FILTER, FLOW_COLUMNS, REMOVED_COLUMNS, SAMPLE_COLUMNS,
                                     STAGE_COLUMNS, TOKEN_COLUMNS)
from data_pipeline.removed_sample import SAMPLE_TEXT_CHARS

from .conftest import SAMPLE_OVERRIDES, read_docs, run_pipeline_cli
from .wandb_records import logged_values, nested_config, read_run, read_table, records, summary, table_columns

pytestmark = pytest.mark.slow

# the stage whose output holds the documents each dedup kind read
DEDUP_INPUT = {"exact": "clean", "near": "exact", "paragraph": "near"}


def run_folders(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))


def run_file(folder: Path) -> Path:
    (path,) = folder.glob("run-*.wandb")
    return path


@pytest.fixture(scope="module")
def logged(sample_run):
    """(run folder, logged values, report, manifest) of the sample run's W&B run (its first one: a later
    test logs a second)."""
    folder = run_folders(sample_run)[0]
    report = json.loads((sample_run / "report.json").read_text())
    manifest = json.loads((sample_run / "manifest.json").read_text())
    return folder, logged_values(run_file(folder)), report, manifest


def table(logged, key: str, columns: list[str]) -> list[dict]:
    folder, values, _, _ = logged
    assert table_columns(folder, values[key]) == columns, key
    return read_table(folder, values[key])


def test_run_is_a_preprocess_job_holding_the_resolved_config(sample_run, logged):
    folder = logged[0]
    (run,) = [r.run for r in records(run_file(folder)) if r.WhichOneof("record_type") == "run"]
    assert run.job_type == "preprocess"
    _, config = read_run(run_file(folder))
    assert config["output_dir"] == str(sample_run) and config["input_dir"].endswith("data/sample")
    assert config["executor"]["tasks"] == 3 and config["tokenizer"]["vocab_size"] == 2048
    assert config["shards"]["formats"] == ["datatrove", "megatron"] and config["logging"]["mode"] == "offline"
    assert set(config["quality"]) >= {"web", "news", "books"}


def test_flow_table_and_bar_chart(logged):
    folder, values, report, _ = logged
    flow = table(logged, "pipeline/flow", FLOW_COLUMNS)
    assert [row["step"] for row in flow] == [f["stage"] for f in report["flow"]]
    assert [row["step"] for row in flow][:2] == ["read", "extract"] and {"exact", "near", "paragraph"} <= {r["step"] for r in flow}
    for before, row in zip(flow, flow[1:]):
        assert row["documents_in"] == before["documents_out"]
        assert row["documents_removed"] == row["documents_in"] - row["documents_out"] >= 0
        assert row["bytes_in"] == before["bytes_out"]
    assert {row["stage"] for row in flow} >= {"01_clean", "04_exact_filter"}
    assert all(row["cpu_seconds"] >= 0 and row["stage_peak_rss_mb"] > 0 for row in flow)

    stages = table(logged, "pipeline/stages", STAGE_COLUMNS)
    assert [row["stage"] for row in stages] == list(report["stage_cpu_seconds"])
    assert all(row["peak_rss_mb"] > 0 for row in stages)

    chart = nested_config(run_file(folder))["_wandb"]["visualize"]["pipeline/documents_out"]["panel_config"]
    assert chart["panelDefId"] == "wandb/bar/v0"
    assert chart["fieldSettings"] == {"label": "step", "value": "documents_out"}
    assert values["pipeline/documents_out_table"]["path"] == values["pipeline/flow"]["path"]


def test_documents_removed_per_filter_reason_and_source(logged):
    _, _, report, _ = logged
    rows = table(logged, "removed/by_filter", REMOVED_COLUMNS)
    flow = {f["stage"]: f for f in report["flow"]}

    def removed(keep) -> int:
        return sum(row["documents"] for row in rows if keep(row))

    assert removed(lambda r: r["filter"] == "language") == flow["language"]["documents_in"] - flow["language"]["documents_out"]
    quality = removed(lambda r: r["filter"] not in ("language", DEDUP_FILTER))
    assert quality == flow["quality"]["documents_in"] - flow["quality"]["documents_out"] > 0
    for kind, dedup in report["dedup"].items():
        assert removed(lambda r: r["filter"] == DEDUP_FILTER and r["reason"] == kind) == dedup["documents_removed"]
    assert {row["source"] for row in rows} <= {"web", "news", "books"}
    assert all(row["reason"] and row["documents"] > 0 for row in rows)


def test_removed_document_sample_shows_each_filter_and_the_kept_duplicate(sample_run, logged):
    rows = table(logged, "removed/sample", SAMPLE_COLUMNS)
    filters = {row["filter"] for row in table(logged, "removed/by_filter", REMOVED_COLUMNS)}
    assert {row["filter"] for row in rows} == filters
    assert all(row["text"].strip() and len(row["text"]) <= SAMPLE_TEXT_CHARS for row in rows)
    assert all(row["kept"] is None for row in rows if row["filter"] != DEDUP_FILTER)

    duplicates = [row for row in rows if row["filter"] == DEDUP_FILTER]
    assert {row["reason"] for row in duplicates} == {"exact", "near", "paragraph"}
    for row in duplicates:
        read = {d["id"]: d for d in read_docs(sample_run / "work" / "docs" / DEDUP_INPUT[row["reason"]])}
        assert row["kept"] in read and row["kept"] != row["id"], row
        assert read[row["id"]]["text"][:SAMPLE_TEXT_CHARS] == row["text"], row["id"]


def test_duplicate_cluster_sizes_histogram(logged):
    _, values, report, _ = logged
    for kind in ("exact", "near", "paragraph"):
        histogram = values[f"dedup/cluster_sizes/{kind}"]
        assert histogram["_type"] == "histogram" and len(histogram["bins"]) == len(histogram["values"]) + 1
        assert sum(histogram["values"]) == report["dedup"][kind]["duplicate_groups"] > 0
        assert histogram["bins"][0] >= 2  # a cluster holds the kept document and at least one removed


def test_tokens_per_source_and_split_and_bad_records_tables(logged):
    _, _, report, manifest = logged
    tokens = table(logged, "tokens/per_source", TOKEN_COLUMNS)
    assert {(r["split"], r["source"]): (r["documents"], r["tokens"]) for r in tokens} == {
        (split, source): (body["documents"], body["tokens"])
        for split, info in manifest["splits"].items() for source, body in info["sources"].items()}
    assert {r["split"] for r in tokens} == {"train", "val"} and {r["source"] for r in tokens} == {"web", "news", "books"}
    # the sample has no bad records (tests/test_bad_input_e2e.py fills this table)
    assert table(logged, "bad_records/per_file", BAD_RECORD_COLUMNS) == [] and report["bad_records"]["count"] == 0


def test_summary_numbers(logged):
    folder, _, report, manifest = logged
    numbers = summary(run_file(folder))
    assert numbers["documents_in"] == report["flow"][0]["documents_out"] == 139
    assert numbers["documents_out"] == report["flow"][-1]["documents_out"]
    for split in ("train", "val"):
        assert numbers[f"tokens_{split}"] == manifest["splits"][split]["tokens"] > 0
        assert numbers[f"documents_{split}"] == manifest["splits"][split]["documents"]
    assert numbers["bad_records"] == 0
    assert numbers["duplicates_removed"] == sum(d["documents_removed"] for d in report["dedup"].values())


def test_output_folder_is_the_dataset_artifact(sample_run, logged):
    folder = logged[0]
    (artifact,) = [r.artifact for r in records(run_file(folder))
                   if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "dataset"]
    sha = hashlib.sha256((sample_run / "manifest.json").read_bytes()).hexdigest()
    assert artifact.name == f"data-{sha[:12]}" and "latest" in artifact.aliases
    assert json.loads(artifact.metadata)["manifest_sha256"] == sha
    files = {entry.path: entry for entry in artifact.manifest.contents if not entry.ref}
    assert {"manifest.json", "report.json", "tokenizer/tokenizer.json"} <= set(files)
    for name, entry in files.items():
        assert Path(entry.local_path).read_bytes() == (sample_run / name).read_bytes(), name
    references = {entry.path: entry.ref for entry in artifact.manifest.contents if entry.ref}
    shards = sorted(str(p.relative_to(sample_run)) for split in ("train", "val") for p in (sample_run / split).iterdir())
    assert sorted(references) == shards
    assert all(ref == (sample_run / name).resolve().as_uri() for name, ref in references.items())


def _local_paths(message) -> list[str]:
    """Every `local_path` field anywhere in a protobuf message."""
    found = []
    for field, value in message.ListFields():
        items = value if field.is_repeated else [value]
        for item in items:
            if field.name == "local_path" and item:
                found.append(item)
            elif field.message_type is not None and hasattr(item, "ListFields"):
                found += _local_paths(item)
    return found


def test_wandb_sync_of_the_run_folder_needs_no_other_file(logged):
    folder, values, _, _ = logged
    all_records = records(run_file(folder))
    local = [path for record in all_records for path in _local_paths(record)]
    assert len(local) >= 3 + 7  # the artifact's files, and W&B's own artifact of each logged table
    for path in local:
        assert Path(path).resolve().is_relative_to(folder.resolve()) and Path(path).is_file(), path
    uploads = [f.path for r in all_records if r.WhichOneof("record_type") == "files" for f in r.files.files]
    uploads += [value["path"] for value in values.values() if isinstance(value, dict) and "path" in value]
    assert any(name.startswith("media/table/") for name in uploads)
    for name in uploads:
        assert (folder / "files" / name).is_file(), name


def _imports_wandb(stderr: str) -> bool:
    """Whether `python -X importtime` reported importing the wandb package."""
    return re.search(r"\|\s+wandb(\.|\s*$)", stderr, re.MULTILINE) is not None


def test_a_rerun_resumes_and_logs_again_and_disabled_logs_nothing(sample_run, logged):
    before = run_folders(sample_run)
    disabled = run_pipeline_cli(sample_run, *SAMPLE_OVERRIDES, "logging=disabled", python_flags=("-X", "importtime"))
    assert "W&B" not in disabled.stdout + disabled.stderr
    assert not _imports_wandb(disabled.stderr)
    assert run_folders(sample_run) == before

    # every stage is done: the rerun resumes, shows the report and logs a second run
    again = run_pipeline_cli(sample_run, *SAMPLE_OVERRIDES)
    (new,) = set(run_folders(sample_run)) - set(before)
    assert f"W&B run {new.name.rsplit('-', 1)[1]} (offline): {new}" in again.stdout
    assert f"upload it with: wandb sync {new}" in again.stdout
    assert Counter(r.WhichOneof("record_type") for r in records(run_file(new)))["artifact"] == \
        Counter(r.WhichOneof("record_type") for r in records(run_file(logged[0])))["artifact"]


def test_a_wandb_failure_is_one_line_naming_logging_mode_and_keeps_the_output(sample_run, tmp_path):
    manifest = (sample_run / "manifest.json").read_bytes()
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9")  # no key, no netrc, no server
    proc = run_pipeline_cli(sample_run, *SAMPLE_OVERRIDES, "logging=online", check=False, env=env)
    assert proc.returncode == 3, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: logging.mode=online: the W&B run could not be made") and "is complete" in line
    assert (sample_run / "manifest.json").read_bytes() == manifest
