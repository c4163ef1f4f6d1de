import json

from datatrove.data import Document

from data_pipeline.dedup import (
    EXACT,
    PARAGRAPH,
    FindHashDuplicates,
    HashDedupFilter,
    HashSignatures,
    normalize_for_hash,
    write_audit,
)

LONG_A = "The quick brown fox jumps over the lazy dog near the river bank every single morning. " * 3
LONG_B = "A completely different paragraph about sailing ships and whales and the open sea all day. " * 3
LONG_C = "Yet another paragraph that talks about mountains, valleys, and long winding country roads. " * 3


def doc(doc_id, text, source="s"):
    return Document(text=text, id=doc_id, metadata={"source": source})


def run_hash_dedup(tmp_path, shards, mode, buckets=3, **filter_options):
    """Run the three steps like the executor would: shards[rank] is that task's documents, in order."""
    work = str(tmp_path / mode)
    min_part = filter_options.get("min_part_chars", 0)
    for rank, docs in enumerate(shards):
        list(HashSignatures(work, mode, buckets, min_part).run(iter(docs), rank, len(shards)))
    for bucket in range(buckets):
        list(FindHashDuplicates(work, mode, buckets).run(None, bucket, buckets))
    kept = []
    for rank, docs in enumerate(shards):
        step = HashDedupFilter(work, mode, buckets, **filter_options)
        kept += list(step.run(iter([Document(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in docs]), rank, len(shards)))
    audit = []
    for path in sorted((tmp_path / mode / "audit").glob("*.jsonl")):
        audit += [json.loads(line) for line in path.read_text().splitlines()]
    return kept, audit


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
    assert [(r["removed"], r["kept"], r["reason"], r["paragraphs_removed"]) for r in audit] == [("chapter", "book", "paragraph", 2)]


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
    before = {p: p.read_bytes() for p in (tmp_path / EXACT).rglob("*") if p.is_file()}
    run_hash_dedup(tmp_path, shards, EXACT)
    after = {p: p.read_bytes() for p in (tmp_path / EXACT).rglob("*") if p.is_file()}
    assert before == after


def test_write_audit_is_sorted_and_stable(tmp_path):
    rows = [{"removed": "z", "kept": "a", "reason": "near"}, {"removed": "b", "kept": "a", "reason": "exact"}]
    assert write_audit(tmp_path / "audit.jsonl", rows) == 2
    first = (tmp_path / "audit.jsonl").read_bytes()
    write_audit(tmp_path / "audit.jsonl", list(reversed(rows)))
    assert (tmp_path / "audit.jsonl").read_bytes() == first
    assert json.loads(first.splitlines()[0])["reason"] == "exact"
