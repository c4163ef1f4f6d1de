import gzip
import json
import random
import shutil
from collections import Counter

import numpy as np
import pytest
from datatrove.data import Document

from data_pipeline import dedup
from data_pipeline.config import ConfigError, PreprocessConfig, QualityProfile, validate
from data_pipeline.dedup import (
    EXACT,
    NEAR,
    PARAGRAPH,
    REMOVAL_DTYPE,
    SIGNATURE_DTYPE,
    SORT_FIELDS,
    FindHashDuplicates,
    HashDedupFilter,
    HashSignatures,
    MinhashAudit,
    dedup_summary,
    dedup_work_folder,
    iter_audit_rows,
    normalize_for_hash,
)

from .conftest import SAMPLE

LONG_A = "The quick brown fox jumps over the lazy dog near the river bank every single morning. " * 3
LONG_B = "A completely different paragraph about sailing ships and whales and the open sea all day. " * 3
LONG_C = "Yet another paragraph that talks about mountains, valleys, and long winding country roads. " * 3


def doc(doc_id, text, source="s"):
    return Document(text=text, id=doc_id, metadata={"source": source})


def copies(docs):
    return [Document(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in docs]


def signatures_and_find(root, shards, mode, buckets=3, block_rows=None, min_part_chars=0):
    work = str(dedup_work_folder(root, mode))
    for rank, docs in enumerate(shards):
        list(HashSignatures(work, mode, buckets, min_part_chars).run(iter(copies(docs)), rank, len(shards)))
    for bucket in range(buckets):
        list(FindHashDuplicates(work, mode, buckets, block_rows=block_rows).run(None, bucket, buckets))
    return work


def filter_shard(work, shards, rank, mode, buckets=3, **filter_options):
    step = HashDedupFilter(work, mode, buckets, **filter_options)
    return list(step.run(iter(copies(shards[rank])), rank, len(shards)))


def run_hash_dedup(root, shards, mode, buckets=3, block_rows=None, **filter_options):
    """Run the three steps like the executor would: shards[rank] is that task's documents, in order."""
    work = signatures_and_find(root, shards, mode, buckets, block_rows, filter_options.get("min_part_chars", 0))
    kept = []
    for rank in range(len(shards)):
        kept += filter_shard(work, shards, rank, mode, buckets, **filter_options)
    return kept, list(iter_audit_rows(root, mode))


def test_normalization_ignores_wrapping_punctuation_and_case():
    assert normalize_for_hash("Some years ago--never mind\nhow long") == normalize_for_hash("some years ago—never mind how long")
    assert normalize_for_hash("people's hats") == normalize_for_hash("people’s  hats")
    assert normalize_for_hash("a b") != normalize_for_hash("a c")


def test_exact_dedup_keeps_one_copy_across_tasks_and_audits_it(tmp_path):
    shards = [
        [doc("a", LONG_A), doc("b", LONG_B)],
        [doc("c", LONG_C), doc("a-copy", LONG_A.upper().replace(". ", ".\n"))],
        [doc("a-copy2", LONG_A)],
    ]
    kept, audit = run_hash_dedup(tmp_path, shards, EXACT)
    assert sorted(d.id for d in kept) == ["a", "b", "c"]
    assert sorted((r["removed"], r["kept"], r["reason"]) for r in audit) == [("a-copy", "a", "exact"), ("a-copy2", "a", "exact")]


def test_paragraph_dedup_keeps_paragraphs_in_the_longest_document(tmp_path):
    book = "\n\n".join([LONG_A, LONG_B, LONG_C, "THE END"])
    chapter = "\n\n".join(["CHAPTER 1.", LONG_A.replace(" ", "\n", 5), LONG_B])  # rewrapped copy
    excerpt = "\n\n".join([LONG_C, "An original closing paragraph long enough to be kept on its own merits, " * 4])
    shards = [[doc("chapter", chapter), doc("excerpt", excerpt)], [doc("book", book)]]
    kept, audit = run_hash_dedup(tmp_path, shards, PARAGRAPH, min_part_chars=50, min_doc_chars_after=100)
    by_id = {d.id: d for d in kept}
    assert by_id["book"].text == book
    assert "chapter" not in by_id  # only "CHAPTER 1." is left: too short to keep
    assert LONG_C not in by_id["excerpt"].text and "original closing paragraph" in by_id["excerpt"].text
    assert audit == [{"removed": "chapter", "source": "s", "kept": "book", "reason": "paragraph",
                      "paragraphs_removed": 2, "paragraphs_total": 3, "also_in": []}]


def test_paragraph_audit_names_the_keeper_of_most_parts_and_the_others_in_also_in(tmp_path):
    medley = "\n\n".join([LONG_A, LONG_B, LONG_C])
    shards = [[doc("long-ab", "\n\n".join([LONG_A, LONG_B, "x" * 400]))], [doc("long-c", "\n\n".join([LONG_C, "y" * 900]))],
              [doc("medley", medley)]]
    kept, audit = run_hash_dedup(tmp_path, shards, PARAGRAPH, min_part_chars=50, min_doc_chars_after=100)
    assert sorted(d.id for d in kept) == ["long-ab", "long-c"]
    assert [(r["removed"], r["kept"], r["also_in"], r["paragraphs_removed"]) for r in audit] == [("medley", "long-ab", ["long-c"], 3)]


def test_paragraphs_repeated_inside_one_document_are_left_alone(tmp_path):
    text = "\n\n".join([LONG_A, LONG_B, LONG_A])
    kept, audit = run_hash_dedup(tmp_path, [[doc("only", text)]], PARAGRAPH, min_part_chars=50)
    assert [d.text for d in kept] == [text] and audit == []


def test_short_paragraphs_are_never_deduplicated(tmp_path):
    shards = [[doc("x", "\n\n".join(["* * *", LONG_A]))], [doc("y", "\n\n".join(["* * *", LONG_B]))]]
    kept, audit = run_hash_dedup(tmp_path, shards, PARAGRAPH, min_part_chars=50)
    assert all(d.text.startswith("* * *") for d in kept) and audit == []


def test_rerun_of_a_task_gives_identical_files(tmp_path):
    shards = [[doc("a", LONG_A)], [doc("b", LONG_A)]]
    run_hash_dedup(tmp_path, shards, EXACT)
    work = dedup_work_folder(tmp_path, EXACT)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    run_hash_dedup(tmp_path, shards, EXACT)
    after = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert before == after and any(p.name.endswith(".jsonl.gz") for p in after)


# --- the bounded merge --------------------------------------------------------------------------------------

PARAGRAPH_POOL = [f"paragraph {i} " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(12)) for i in range(30)]


def random_shards(seed, ranks, docs_per_rank):
    """Documents made of paragraphs from a small pool: many repeats, some groups of dozens of copies."""
    rng = random.Random(seed)
    shards = []
    for rank in range(ranks):
        docs = []
        for i in range(docs_per_rank):
            count = rng.randint(1, 6)
            paragraphs = [PARAGRAPH_POOL[min(int(rng.expovariate(0.15)), len(PARAGRAPH_POOL) - 1)] for _ in range(count)]
            docs.append(doc(f"r{rank}-d{i}-é", "\n\n".join(paragraphs)))
        shards.append(docs)
    return shards


def full_sort_removals(work, buckets):
    """What the find stage must decide, by loading and sorting each whole bucket (the old way)."""
    expected, groups = {}, 0
    for bucket in range(buckets):
        rows, ids = [], []
        for path in sorted((work / "signatures" / f"{bucket:05d}").glob("*.bin")):
            sigs = np.fromfile(path, dtype=SIGNATURE_DTYPE)
            blob = path.with_suffix(".ids").read_bytes()
            offsets = [0] + np.cumsum(sigs["id_len"], dtype=np.int64).tolist()
            rows.append(sigs)
            ids += [blob[offsets[i]:offsets[i + 1]].decode() for i in range(len(sigs))]
        sigs = np.concatenate(rows)
        order = np.lexsort(tuple(sigs[f] for f in reversed(SORT_FIELDS)))
        sigs, ids = sigs[order], [ids[i] for i in order]
        keeper = 0
        group_removed = set()
        for i in range(len(sigs)):
            if i == 0 or sigs["hash"][i] != sigs["hash"][i - 1]:
                keeper = i
            if (sigs["rank"][i], sigs["doc"][i]) != (sigs["rank"][keeper], sigs["doc"][keeper]):
                row = (int(sigs["doc"][i]), int(sigs["part"][i]), int(sigs["rank"][keeper]), int(sigs["doc"][keeper]), ids[keeper])
                expected.setdefault((bucket, int(sigs["rank"][i])), []).append(row)
                group_removed.add(int(sigs["hash"][i]))
        groups += len(group_removed)
    return expected, groups


def written_removals(work, buckets):
    found = {}
    for bucket in range(buckets):
        for path in sorted((work / "removals" / f"{bucket:05d}").glob("*.bin")):
            records = np.fromfile(path, dtype=REMOVAL_DTYPE)
            blob = path.with_suffix(".kept_ids").read_bytes()
            offsets = [0] + np.cumsum(records["kept_id_len"], dtype=np.int64).tolist()
            rows = [(int(r["doc"]), int(r["part"]), int(r["keep_rank"]), int(r["keep_doc"]), blob[offsets[i]:offsets[i + 1]].decode())
                    for i, r in enumerate(records)]
            if rows:
                found[(bucket, int(path.stem))] = rows
    return found


def find_summaries(work):
    return sum(json.loads(p.read_text())["duplicate_groups"] for p in (work / "audit").glob("find_*.summary.json"))


def find_cluster_sizes(work) -> Counter:
    sizes = Counter()
    for path in (work / "audit").glob("find_*.summary.json"):
        sizes.update({int(k): n for k, n in json.loads(path.read_text())["cluster_sizes"].items()})
    return sizes


def test_merge_in_tiny_blocks_decides_what_a_full_sort_decides_and_stays_bounded(tmp_path, monkeypatch):
    buckets, block_rows = 2, 4
    shards = random_shards(seed=3, ranks=9, docs_per_rank=25)
    largest_buffer, largest_chunk = [0], [0]
    top_up, merge = dedup._SortedRun.top_up, dedup.merge_sorted_runs

    def watched_top_up(run):
        top_up(run)
        largest_buffer[0] = max(largest_buffer[0], len(run.rows))

    def watched_merge(runs):
        for chunk in merge(runs):
            largest_chunk[0] = max(largest_chunk[0], len(chunk[0]))
            yield chunk

    monkeypatch.setattr(dedup._SortedRun, "top_up", watched_top_up)
    monkeypatch.setattr(dedup, "merge_sorted_runs", watched_merge)
    work = dedup_work_folder(tmp_path / "tiny", PARAGRAPH)
    signatures_and_find(tmp_path / "tiny", shards, PARAGRAPH, buckets, block_rows=block_rows)
    monkeypatch.undo()

    expected, groups = full_sort_removals(work, buckets)
    assert max(Counter(np.fromfile(p, SIGNATURE_DTYPE)["hash"].tolist()).most_common(1)[0][1]
               for p in work.glob("signatures/*/*.bin")) > block_rows, "some group must span blocks"
    assert written_removals(work, buckets) == expected and groups > 0
    assert find_summaries(work) == groups
    assert 0 < largest_buffer[0] <= block_rows + block_rows // 2
    assert largest_chunk[0] <= len(shards) * (block_rows + block_rows // 2)

    # one block holding everything: byte-identical removal files
    whole = dedup_work_folder(tmp_path / "whole", PARAGRAPH)
    signatures_and_find(tmp_path / "whole", shards, PARAGRAPH, buckets, block_rows=1 << 20)
    for path in whole.glob("removals/*/*"):
        assert path.read_bytes() == (work / path.relative_to(whole)).read_bytes(), path
    # groups cut by block ends are counted once, at their whole size
    sizes = find_cluster_sizes(work)
    assert sizes == find_cluster_sizes(whole) and sum(sizes.values()) == groups
    assert sum((size - 1) * n for size, n in sizes.items()) == sum(len(r) for r in expected.values())


@pytest.mark.parametrize("mode", [EXACT, PARAGRAPH])
def test_filter_opens_no_other_shards_files(tmp_path, mode):
    shards = random_shards(seed=5, ranks=4, docs_per_rank=15)
    for docs in shards:  # exact copies across shards
        docs.append(doc(f"{docs[0].id}-copy", shards[0][0].text))
    options = {"min_part_chars": 10, "min_doc_chars_after": 150} if mode == PARAGRAPH else {}
    kept, audit = run_hash_dedup(tmp_path / "all", shards, mode, **options)
    assert audit

    work = signatures_and_find(tmp_path / "alone", shards, mode, min_part_chars=options.get("min_part_chars", 0))
    shutil.rmtree(f"{work}/signatures")
    rank = 2
    for path in (tmp_path / "alone").rglob("removals/*/*"):
        if not path.name.startswith(f"{rank:05d}."):
            path.unlink()
    alone = filter_shard(work, shards, rank, mode, **options)
    audit_alone = list(iter_audit_rows(tmp_path / "alone", mode))
    ids = {d.id for d in shards[rank]}
    assert audit_alone == [r for r in audit if r["removed"] in ids]
    assert [d.text for d in alone] == [d.text for d in kept if d.id in ids]


def test_filter_refuses_missing_removals(tmp_path):
    shards = [[doc("a", LONG_A)], [doc("b", LONG_A)]]
    work = signatures_and_find(tmp_path, shards, EXACT)
    (dedup_work_folder(tmp_path, EXACT) / "removals" / "00001" / "00001.bin").unlink()
    with pytest.raises(FileNotFoundError, match="00001.bin"):
        filter_shard(work, shards, 1, EXACT)


# --- summaries ----------------------------------------------------------------------------------------------


def test_dedup_summary_counts_rows_and_groups_from_the_task_summaries(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup, "SUMMARY_SAMPLE_ROWS", 3)
    shards = [[doc(f"{r}-{i}", [LONG_A, LONG_B, LONG_C][i % 3] + str(i % 2)) for i in range(8)] for r in range(3)]
    kept, audit = run_hash_dedup(tmp_path, shards, EXACT)
    summary = dedup_summary(tmp_path, sample_size=3)
    by_removed = sorted(audit, key=lambda r: r["removed"])
    assert summary[EXACT]["documents_removed"] == len(audit) == 24 - 6
    assert summary[EXACT]["duplicate_groups"] == 6 == len({r["kept"] for r in audit})
    assert summary[EXACT]["sample"] == by_removed[:3]
    assert summary[EXACT]["audit_files"] == [f"work/exact/audit/{r:05d}.jsonl.gz" for r in range(3)]
    assert summary[EXACT]["documents_removed_by_source"] == {"s": 18}
    assert summary[EXACT]["cluster_sizes"] == {"3": 4, "6": 2}  # per shard A0 and B1 twice, four texts once
    assert summary[NEAR] == summary[PARAGRAPH] == {
        "documents_removed": 0, "documents_removed_by_source": {}, "duplicate_groups": 0, "cluster_sizes": {},
        "sample": [], "sample_texts": {}, "audit_files": []}
    # beyond the 3 rows each task keeps: the smallest 3 of every task
    per_task = [r for rank in range(3) for r in [r for r in by_removed if r["removed"].startswith(f"{rank}-")][:3]]
    assert dedup_summary(tmp_path, sample_size=100)[EXACT]["sample"] == sorted(per_task, key=lambda r: r["removed"])


# --- the near dedup audit join ------------------------------------------------------------------------------


def test_near_audit_join_names_each_clusters_keeper_across_tasks(tmp_path):
    ranks, parts = 3, 3
    audit = MinhashAudit(str(dedup_work_folder(tmp_path, NEAR)), parts=parts)
    rng = random.Random(1)
    clusters = {c: [(rng.randrange(ranks), f"c{c}-m{m}") for m in range(rng.randint(2, 5))] for c in range(20)}
    expected = []
    for rank in range(ranks):
        removed, survivors = [], []
        for c, members in clusters.items():
            for i, (member_rank, doc_id) in enumerate(members):
                if member_rank == rank:
                    d = Document(text="t", id=doc_id, metadata={"source": "web", "minhash_cluster_id": c})
                    (survivors if i == 0 else removed).append(d)
        survivors.append(Document(text="t", id=f"lonely-{rank}", metadata={"minhash_cluster_id": -1}))
        with audit.removed_writer() as writer:
            for d in removed:
                writer.write(d, rank)
                expected.append({"removed": d.id, "source": "web", "kept": clusters[d.metadata["minhash_cluster_id"]][0][1],
                                 "reason": "near", "cluster": d.metadata["minhash_cluster_id"]})
        assert [d.id for d in audit.keeper_log().run(iter(survivors), rank, ranks)] == [d.id for d in survivors]
    for part in range(parts):
        list(audit.join_step().run(None, part, parts))
        rows = [json.loads(line) for line in
                gzip.open(audit.work / "audit" / f"{part:05d}.jsonl.gz", "rt").read().splitlines()]
        assert {r["cluster"] % parts for r in rows} <= {part}
    rows = list(iter_audit_rows(tmp_path, NEAR))
    assert sorted(rows, key=lambda r: r["removed"]) == sorted(expected, key=lambda r: r["removed"])
    summary = dedup_summary(tmp_path)[NEAR]
    assert summary["documents_removed"] == len(expected)
    assert summary["duplicate_groups"] == sum(1 for members in clusters.values() if len(members) > 1)


# --- config -------------------------------------------------------------------------------------------------


def sample_config(**dedup_options) -> PreprocessConfig:
    cfg = PreprocessConfig(input_dir=str(SAMPLE), quality={k: QualityProfile() for k in ("web", "news", "books")})
    cfg.executor.tasks = 7
    for key, value in dedup_options.items():
        setattr(cfg.dedup, key, value)
    return cfg


def find_stage_tasks(cfg) -> dict[str, int]:
    from data_pipeline.pipeline import build_stages

    return {s.key: s.tasks for s in build_stages(cfg, validate(cfg), {}) if s.key.endswith("_find") or s.key == "near_audit"}


def test_find_tasks_default_to_the_number_of_tasks_and_an_explicit_value_wins():
    assert find_stage_tasks(sample_config()) == {"exact_find": 7, "paragraph_find": 7, "near_audit": 7}
    assert find_stage_tasks(sample_config(find_tasks=2)) == {"exact_find": 2, "paragraph_find": 2, "near_audit": 7}
    with pytest.raises(ConfigError, match="dedup.find_tasks"):
        validate(sample_config(find_tasks=0))
