"""data_pipeline/wandb_log.py without W&B: the panels of a report, the cluster-size histogram."""

from data_pipeline.wandb_log import HISTOGRAM_BINS, build_panels, size_histogram

MANIFEST = {"splits": {"train": {"documents": 3, "tokens": 30, "sources": {"web": {"documents": 3, "tokens": 30}}},
                       "val": {"documents": 1, "tokens": 5, "sources": {"web": {"documents": 1, "tokens": 5}}}}}


def test_cluster_sizes_get_one_bin_per_size_until_there_are_too_many():
    assert size_histogram({2: 5, 3: 1, 5: 2}) == ([5, 1, 0, 2], [2, 3, 4, 5, 6])
    counts, edges = size_histogram({2: 1, 3: 4, 10_000: 3})
    assert len(counts) == HISTOGRAM_BINS and sum(counts) == 8 and (counts[0], counts[-1]) == (5, 3)
    assert edges[0] == 2 and edges[-1] == 10_000


def test_a_report_of_an_older_run_gives_panels_with_empty_new_columns():
    report = {  # what report.json held before the removal counts, cluster sizes and CPU per step
        "flow": [{"stage": "read", "documents_in": None, "documents_out": 4, "bytes_in": None, "bytes_out": 40},
                 {"stage": "quality", "documents_in": 4, "documents_out": 3, "bytes_in": 40, "bytes_out": 30}],
        "dedup": {"exact": {"documents_removed": 0, "duplicate_groups": 0, "sample": [], "audit_files": []}},
        "bad_records": {"count": 0, "by_step": {}, "sample": [], "files": []},
        "stage_cpu_seconds": {"01_clean": 1.5}, "stage_peak_rss_mb": {"01_clean": 300.0},
    }
    panels = build_panels(report, MANIFEST)
    assert panels.flow[1] == ["quality", None, 4, 3, 1, 40, 30, None, None]
    assert panels.stages == [["01_clean", 1.5, 300.0]]
    assert panels.removed == panels.removed_sample == panels.bad_records == [] and panels.cluster_sizes == {}
    assert panels.tokens == [["train", "web", 3, 30], ["val", "web", 1, 5]]
    assert panels.summary == {"documents_in": 4, "documents_out": 3, "tokens_train": 30, "tokens_val": 5,
                              "documents_train": 3, "documents_val": 1, "duplicates_removed": 0, "bad_records": 0}

