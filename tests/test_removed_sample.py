"""data_pipeline/removed_sample.py: what a filtering task keeps of the documents it removed."""

import json

from datatrove.data import Document

from data_pipeline.removed_sample import (REPORT_SAMPLE_PER_FILTER, SAMPLE_PER_FILTER, SAMPLE_TEXT_CHARS,
                                          RemovedSample, removed_summary, text_start)


def doc(i: int, source: str = "web") -> Document:
    return Document(text=f"document {i} " * 100, id=f"{source}-{i}", metadata={"source": source})


def test_a_task_keeps_counts_per_source_filter_and_reason_and_the_first_documents_of_each_filter(tmp_path):
    with RemovedSample(tmp_path, "quality") as removed:
        for i in range(SAMPLE_PER_FILTER + 3):
            removed.add(doc(i), "c4", "too_few_sentences", rank=2)
        removed.add(doc(99, "news"), "fineweb", "line_punct_ratio", rank=2)
    task = json.loads((tmp_path / "quality" / "00002.json").read_text())
    assert task["removed"] == [
        {"source": "news", "filter": "fineweb", "reason": "line_punct_ratio", "documents": 1},
        {"source": "web", "filter": "c4", "reason": "too_few_sentences", "documents": SAMPLE_PER_FILTER + 3}]
    assert [row["id"] for row in task["sample"]] == [f"web-{i}" for i in range(SAMPLE_PER_FILTER)] + ["news-99"]
    assert all(len(row["text"]) == SAMPLE_TEXT_CHARS for row in task["sample"])


def test_as_a_datatrove_exclusion_writer_it_takes_the_filters_reason(tmp_path):
    removed = RemovedSample(tmp_path, "language")
    with removed as writer:
        document = doc(1)
        document.metadata["filter_reason"] = "other_language"
        writer.write(document, 0)
    with removed:  # the next task of the same step removed nothing: no file, no leftovers
        pass
    assert sorted(p.name for p in (tmp_path / "language").iterdir()) == ["00000.json"]
    assert removed_summary(tmp_path)["removed"] == [
        {"source": "web", "filter": "language", "reason": "other_language", "documents": 1}]


def test_the_summary_adds_up_tasks_and_keeps_a_bounded_sample(tmp_path):
    for rank in range(4):
        with RemovedSample(tmp_path, "quality") as removed:
            for i in range(SAMPLE_PER_FILTER):
                removed.add(doc(rank * 100 + i), "c4", "too_few_sentences", rank)
    summary = removed_summary(tmp_path)
    assert summary["removed"] == [{"source": "web", "filter": "c4", "reason": "too_few_sentences",
                                   "documents": 4 * SAMPLE_PER_FILTER}]
    assert len(summary["sample"]) == REPORT_SAMPLE_PER_FILTER and summary["sample"][0]["id"] == "web-0"


def test_a_removed_documents_text_start_is_bounded_and_writable_as_utf8():
    assert text_start("é" * 1000) == "é" * SAMPLE_TEXT_CHARS
    assert text_start("a\ud83db").encode("utf-8") == b"a?b"
