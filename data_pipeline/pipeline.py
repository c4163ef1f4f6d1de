"""The preprocessing pipeline as a list of stages, built from the config.

  clean      read → extract HTML → strip Gutenberg → normalize → language ID → quality → PII
  exact      hash signatures → find duplicates → filter          (dedup.exact)
  near       MinHash signatures → buckets → clusters → filter → audit   (dedup.minhash)
  paragraph  hash signatures → find duplicates → filter          (dedup.paragraph)
  tokens     tokenizer (train on an even sample, or copy) → tokenize → shard (one task per bucket) → manifest
  report     stats, bad records and dedup audit summaries → report.json

Stages hand documents to each other as JSON Lines under `<output>/work/`. Every stage that reads
them uses the same number of tasks, so steps that pair documents by their index in a task
(MinHash and hash dedup filters) see the same documents in the same order.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from data_pipeline.bad_records import BadRecordLog
from data_pipeline.config import PreprocessConfig, SourceConfig
from shard_format import storage
from data_pipeline.dedup import (EXACT, NEAR, PARAGRAPH, FindHashDuplicates, HashDedupFilter, HashSignatures, MinhashAudit,
                                 dedup_work_folder)
from data_pipeline.executors import Stage
from data_pipeline.fast.minhash_buckets import FastMinhashDedupBuckets
from data_pipeline.fast.minhash_clusters import FastMinhashDedupCluster
from data_pipeline.fast.minhash_signature import FastMinhashDedupSignature
from data_pipeline.fast.word_tokenizer import get_word_tokenizer
from data_pipeline.progress import with_task_monitors
from data_pipeline.readers import SourceReader, list_source_files
from data_pipeline.removed_sample import RemovedSample
from data_pipeline.report import WriteReport
from data_pipeline.steps import GutenbergStripper, HtmlExtractor, LanguageIdentifier, PiiRedactor, TextNormalizer
from data_pipeline.steps.meter import Meter
from data_pipeline.steps.quality import QualityFilters
from data_pipeline.steps.tokenizer_training import PrepareTokenizer
from data_pipeline.steps.tokens import TokenizeDocuments, WriteBucketShards, WriteManifest


class Layout:
    """Where everything goes: the results in the output folder (a local folder or a URL), the intermediate
    files, logs and resumption state in the work folder (local or on a shared filesystem)."""

    def __init__(self, output_dir: str, work_dir: str | None = None):
        self.output = output_dir
        self.state = Path(work_dir if work_dir is not None else output_dir)
        self.work = self.state / "work"
        self.logs = self.state / "logs"
        self.remote_output = storage.is_remote(output_dir)
        # the tokenizer the later stages load: in the output folder, or its local copy when that is remote
        self.tokenizer = self.work / "tokenizer" if self.remote_output else Path(output_dir) / "tokenizer"
        self.bad_records = self.work / "bad_records"
        self.removed = self.work / "removed"  # counts and samples of what the filters removed
        self.token_parts = self.work / "token_parts"
        self.shard_lists = self.work / "shard_lists"
        self.shard_staging = self.work / "shard_staging"
        self.report = storage.join(output_dir, "report.json")

    @classmethod
    def of(cls, cfg: PreprocessConfig) -> "Layout":
        return cls(cfg.output_dir, cfg.work_dir)

    def docs(self, stage: str) -> Path:
        return self.work / "docs" / stage


def _writer(folder: Path) -> JsonlWriter:
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)


def _reader(folder: Path) -> JsonlReader:
    return JsonlReader(str(folder), glob_pattern="*.jsonl", compression=None)


def build_stages(cfg: PreprocessConfig, sources: list[SourceConfig], resolved_config: dict) -> list[Stage]:
    layout = Layout.of(cfg)
    tasks = cfg.executor.tasks
    stages: list[Stage] = []

    def add(key: str, title: str, pipeline: list, n_tasks: int = tasks) -> None:
        stage = Stage(key=key, name=f"{len(stages) + 1:02d}_{key}", title=title, pipeline=pipeline, tasks=n_tasks)
        stage.pipeline = with_task_monitors(pipeline, layout.state, stage, cfg.progress_interval_s)
        stages.append(stage)

    # clean
    files = list_source_files(sources, cfg.storage_options)
    bad_records = BadRecordLog(layout.bad_records)
    clean = [SourceReader(files, bad_records, cfg.storage_options), Meter("read")]
    for enabled, step, point in (
        (cfg.extract.enabled, lambda: HtmlExtractor(cfg.extract, bad_records, compiled_xpaths=cfg.components == "fast"), "extract"),
        (cfg.gutenberg.enabled, lambda: GutenbergStripper(cfg.gutenberg), "gutenberg"),
        (cfg.normalize.enabled, lambda: TextNormalizer(cfg.normalize, bad_records, skip_plain_lines=cfg.components == "fast"), "normalize"),
        (cfg.language.enabled, lambda: LanguageIdentifier(cfg.language, RemovedSample(layout.removed, "language")), "language"),
        (True, lambda: QualityFilters(cfg.quality, cfg.components, RemovedSample(layout.removed, "quality")), "quality"),
        (cfg.pii.enabled, lambda: PiiRedactor(cfg.pii), "pii"),
    ):
        if enabled:
            clean += [step(), Meter(point)]
    docs = layout.docs("clean")
    add("clean", "clean: read, extract, filter", clean + [_writer(docs)], min(tasks, len(files)))

    # exact and paragraph dedup share one mechanism
    def hash_dedup(kind: str, label: str, **filter_options) -> None:
        nonlocal docs
        work = str(dedup_work_folder(layout.state, kind))
        # null: as many buckets as tasks, so that a find task merges about one task's share of the hashes
        find_tasks = tasks if cfg.dedup.find_tasks is None else cfg.dedup.find_tasks
        add(f"{kind}_signatures", f"{label}: signatures", [_reader(docs), HashSignatures(work, kind, find_tasks, filter_options.get("min_part_chars", 0))])
        add(f"{kind}_find", f"{label}: find duplicates", [FindHashDuplicates(work, kind, find_tasks)], find_tasks)
        out = layout.docs(kind)
        add(f"{kind}_filter", f"{label}: filter", [_reader(docs), HashDedupFilter(work, kind, find_tasks, **filter_options), Meter(kind), _writer(out)])
        docs = out

    if cfg.dedup.exact.enabled:
        hash_dedup(EXACT, "exact dedup")

    if cfg.dedup.minhash.enabled:
        mh = cfg.dedup.minhash
        mh_config = MinhashConfig(n_grams=mh.n_grams, num_buckets=mh.num_buckets, hashes_per_bucket=mh.hashes_per_bucket, seed=mh.seed)
        work = dedup_work_folder(layout.state, NEAR)
        audit = MinhashAudit(str(work), parts=tasks)
        language = get_word_tokenizer(cfg.components)
        signatures = FastMinhashDedupSignature if cfg.components == "fast" else MinhashDedupSignature
        add("near_signatures", "near dedup: minhash signatures", [_reader(docs), signatures(str(work / "signatures"), config=mh_config, language=language)])
        bucket_workers = mh.bucket_workers or max(1, tasks // mh.num_buckets)
        buckets_step = FastMinhashDedupBuckets if cfg.components == "fast" else MinhashDedupBuckets
        add("near_buckets", "near dedup: buckets", [buckets_step(str(work / "signatures"), str(work / "buckets"), config=mh_config)],
            mh.num_buckets * bucket_workers)
        add("near_clusters", "near dedup: clusters", [FastMinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=mh_config, save_cluster_id=True)], 1)
        out = layout.docs("near")
        add("near_filter", "near dedup: filter", [
            _reader(docs),
            MinhashDedupFilter(str(work / "remove_ids"), exclusion_writer=audit.removed_writer(), load_cluster_ids=True),
            audit.keeper_log(),
            Meter("near"),
            _writer(out),
        ])
        add("near_audit", "near dedup: audit", [audit.join_step()])
        docs = out

    if cfg.dedup.paragraph.enabled:
        para = cfg.dedup.paragraph
        hash_dedup(PARAGRAPH, "paragraph dedup", min_part_chars=para.min_chars, min_doc_chars_after=para.min_doc_chars_after)

    tok = cfg.tokenizer
    add("tokenizer", "tokenizer", [PrepareTokenizer(str(layout.tokenizer), tok.path, tok.vocab_size, tok.min_frequency,
                                                    tok.eos_token, tok.train_max_chars, docs)], 1)
    shards = cfg.shards
    source_names = [s.name for s in sources]
    add("tokenize", "tokenize", [_reader(docs), TokenizeDocuments(str(layout.tokenizer), str(layout.token_parts), tok.eos_token,
                                                                  shards.seed, source_names, shards.chunk_chars, tok.batch_size)])
    add("shard", "shard", [WriteBucketShards(str(layout.token_parts), layout.output, str(layout.shard_lists),
                                             str(layout.tokenizer), tok.eos_token, source_names, shards.buckets,
                                             shards.val_fraction, shards.max_tokens_per_shard, shards.formats,
                                             str(layout.shard_staging), cfg.storage_options)],
        shards.buckets)
    add("manifest", "manifest", [WriteManifest(str(layout.shard_lists), layout.output, str(layout.tokenizer),
                                               tok.eos_token, shards.buckets, resolved_config, cfg.storage_options)], 1)
    add("report", "report", [WriteReport(str(layout.state), [s.name for s in stages], layout.output, cfg.storage_options,
                                           print_table=cfg.executor.kind == "slurm")], 1)
    return stages


def config_to_dict(cfg: PreprocessConfig) -> dict:
    return asdict(cfg)
