"""Typed configuration of the preprocessing pipeline.

The dataclasses below are the Hydra schema (registered in the ConfigStore by `register_configs`):
an unknown key or a wrong type fails while Hydra composes the config, naming the key. `validate`
then checks what types cannot express (ranges, known kinds, existing paths) before any work starts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from monitoring.config import LoggingConfig
from shard_format import storage
from shard_format.errors import ConfigError, require

SOURCE_KINDS = ("web", "news", "books", "generic")
SHARD_FORMATS = ("datatrove", "megatron")


COMPONENTS = ("fast", "stock")


@dataclass
class SourceConfig:
    name: str = "???"
    kind: str = "generic"  # web | news | books | generic
    # files, folders (read recursively) or globs; relative paths are relative to the working dir; or fsspec
    # URLs (s3://bucket/prefix/*.jsonl.gz), all of one source on the same filesystem
    paths: list[str] = field(default_factory=list)
    # JSONL/Parquet: the field that holds the text, and the one that holds the id
    text_key: str = "text"
    id_key: str = "id"
    # quality profile to apply; null means the profile named like the kind
    quality: Optional[str] = None


@dataclass
class ExtractConfig:
    enabled: bool = True
    favour_precision: bool = True
    include_tables: bool = True
    timeout_s: float = 30.0


@dataclass
class GutenbergConfig:
    enabled: bool = True


@dataclass
class NormalizeConfig:
    enabled: bool = True
    unicode_form: str = "NFC"
    # share of U+FFFD replacement characters above which a record is reported and dropped
    max_replacement_char_ratio: float = 0.01


@dataclass
class LanguageConfig:
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    # language ID looks at this many leading characters (a 50 MB book needs no more)
    max_chars: int = 20_000


@dataclass
class GopherQualityConfig:
    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 10_000_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    # n-gram size -> the largest share of characters its most frequent / its duplicated n-grams may cover
    top_n_grams: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


@dataclass
class C4Config:
    enabled: bool = True
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass
class FineWebConfig:
    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@dataclass
class QualityProfile:
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)


@dataclass
class PiiConfig:
    enabled: bool = True
    email_replacement: str = "<EMAIL>"
    ip_replacement: str = "<IP>"


@dataclass
class ExactDedupConfig:
    enabled: bool = True


@dataclass
class MinhashDedupConfig:
    enabled: bool = True
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    # tasks per LSH bucket in the bucket stage (each merges one hash range of the bucket); null: as many as
    # make the stage about executor.tasks tasks. The clusters do not depend on it
    bucket_workers: Optional[int] = None


@dataclass
class ParagraphDedupConfig:
    enabled: bool = True
    # paragraphs with fewer normalized characters are never deduplicated ("CHAPTER 1", "* * *")
    min_chars: int = 100
    # a document left with fewer characters after removing its repeated paragraphs is dropped
    min_doc_chars_after: int = 200


@dataclass
class DedupConfig:
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinhashDedupConfig = field(default_factory=MinhashDedupConfig)
    paragraph: ParagraphDedupConfig = field(default_factory=ParagraphDedupConfig)
    # tasks (hash buckets) of the hash-merging steps of exact and paragraph dedup; null: executor.tasks
    find_tasks: Optional[int] = None


@dataclass
class TokenizerConfig:
    # a local tokenizer.json to use; null trains a byte-level BPE on the cleaned corpus
    path: Optional[str] = None
    vocab_size: int = 8192
    min_frequency: int = 2
    # cap on the characters of cleaned text the BPE trainer sees
    train_max_chars: int = 200_000_000
    eos_token: str = "<|endoftext|>"
    batch_size: int = 512


@dataclass
class ShardsConfig:
    seed: int = 1234
    val_fraction: float = 0.05
    max_tokens_per_shard: int = 50_000_000
    formats: list[str] = field(default_factory=lambda: ["datatrove"])
    # the shard stage's tasks: documents are cut into this many buckets by their shuffle hash, each written
    # by its own task. The shards depend on it (not on executor.tasks): ~1 per 10 M documents is a good size
    buckets: int = 16
    # documents longer than this are cut into chunks of at least this many characters (at paragraph breaks)
    # before the train/val split, so long books give validation text too; 0: never cut
    chunk_chars: int = 100_000


@dataclass
class StageExecutorConfig:
    """Slurm settings of one stage (`executor.stages.<stage key>`); a field left null takes the stage's
    built-in default (SINGLE_TASK_STAGE_DEFAULTS), else the executor-level value."""

    time: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem_per_cpu_gb: Optional[int] = None
    partition: Optional[str] = None
    qos: Optional[str] = None
    workers: Optional[int] = None  # array elements running at once; -1 = no limit
    tasks_per_job: Optional[int] = None
    max_array_launch_parallel: Optional[bool] = None
    randomize_start_duration: Optional[int] = None
    # added to the executor-level sbatch_args; the stage's win
    sbatch_args: dict[str, Any] = field(default_factory=dict)


# The stages that run as one task see the whole corpus, so they get more memory and time than the
# executor-level values, which are sized for a task's share. A user's executor.stages.<key>.<field> wins.
SINGLE_TASK_STAGE_DEFAULTS: dict[str, StageExecutorConfig] = {
    "near_clusters": StageExecutorConfig(time="24:00:00", mem_per_cpu_gb=32),
    "tokenizer": StageExecutorConfig(time="12:00:00", mem_per_cpu_gb=16),
    "manifest": StageExecutorConfig(time="02:00:00", mem_per_cpu_gb=4),
    "report": StageExecutorConfig(time="02:00:00", mem_per_cpu_gb=4),
}


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | slurm
    tasks: int = 4
    workers: int = -1  # local: processes; slurm: elements of an array job running at once; -1 = CPUs / no limit
    # slurm only
    partition: Optional[str] = None
    qos: Optional[str] = None
    time: str = "02:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    # the cluster's MaxArraySize (or less; -1: no limit): a stage of more array elements is submitted as
    # several array jobs ("waves"), and the next stage waits for every one of them
    max_array_size: int = 1001
    # submit a stage's waves at once (true) or each after the one before has ended (false)
    max_array_launch_parallel: bool = False
    # datatrove tasks each array element runs one after another (fewer, longer Slurm jobs)
    tasks_per_job: int = 1
    # each task first sleeps up to this many seconds, so thousands do not hit the filesystem at once
    randomize_start_duration: int = 0
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    env_command: Optional[str] = None
    # per-stage settings by stage key (clean, exact_find, near_clusters, tokenizer, shard, report, ...)
    stages: dict[str, StageExecutorConfig] = field(default_factory=dict)
    # render the sbatch scripts without submitting them
    dry_run: bool = False
    # follow the submitted jobs until the pipeline ends (progress, then the report; a failed stage is an
    # error and cancels its dependants); false: submit and return
    wait: bool = True


@dataclass(frozen=True)
class StageSlurmSettings:
    """What one stage's Slurm jobs are submitted with: every StageExecutorConfig field resolved."""

    time: str
    cpus_per_task: int
    mem_per_cpu_gb: int
    partition: Optional[str]
    qos: Optional[str]
    workers: int
    tasks_per_job: int
    max_array_launch_parallel: bool
    randomize_start_duration: int
    sbatch_args: dict[str, Any]


def stage_slurm_settings(ex: ExecutorConfig, stage_key: str) -> StageSlurmSettings:
    """The stage's own value of each field, else its built-in default, else the executor-level value."""
    own = ex.stages.get(stage_key, StageExecutorConfig())
    builtin = SINGLE_TASK_STAGE_DEFAULTS.get(stage_key, StageExecutorConfig())

    def pick(name: str):
        for layer in (own, builtin):
            if getattr(layer, name) is not None:
                return getattr(layer, name)
        return getattr(ex, name)

    scalar_fields = [f.name for f in fields(StageSlurmSettings) if f.name != "sbatch_args"]
    return StageSlurmSettings(**{name: pick(name) for name in scalar_fields},
                              sbatch_args={**ex.sbatch_args, **builtin.sbatch_args, **own.sbatch_args})


@dataclass
class PreprocessConfig:
    # input_dir, sources[i].paths and output_dir may be fsspec URLs (s3://bucket/prefix, gs://...)
    input_dir: Optional[str] = None
    sources: list[SourceConfig] = field(default_factory=list)
    output_dir: str = "outputs/data"
    # a local or shared-filesystem folder for intermediate files and logs; null: output_dir. Required when
    # output_dir is a URL
    work_dir: Optional[str] = None
    # passed to fsspec for every URL (s3fs: endpoint_url, key, secret, client_kwargs, ...); credentials and
    # endpoint otherwise come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)
    storage_options: dict[str, Any] = field(default_factory=dict)
    # fast | stock: see "Fast components" in README.md
    components: str = "fast"
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    gutenberg: GutenbergConfig = field(default_factory=GutenbergConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: dict[str, QualityProfile] = field(default_factory=dict)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # the W&B run made at the end of a successful run (conf/logging/); it never changes the output
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    progress: bool = True
    # without a terminal (Slurm output, CI logs): seconds between progress lines; also how often tasks update
    # their progress files
    progress_interval_s: float = 10.0


def resolve_sources(cfg: PreprocessConfig) -> list[SourceConfig]:
    """The sources to read: `sources` if given, else the web/news/books folders of `input_dir`."""
    if cfg.sources:
        require(cfg.input_dir is None, "input_dir", "give either input_dir or sources, not both")
        return list(cfg.sources)
    require(cfg.input_dir is not None, "sources", "no input: set input_dir=DIR or give a list of sources")
    root = cfg.input_dir
    with _storage_errors("input_dir", root):
        require(storage.isdir(root, cfg.storage_options), "input_dir", f"{root} is not a directory")
        found = [
            SourceConfig(name=kind, kind=kind, paths=[storage.join(root, kind)])
            for kind in ("web", "news", "books")
            if storage.exists(storage.join(root, kind), cfg.storage_options)
        ]
    require(bool(found), "input_dir", f"{root} has none of the folders web/, news/, books/")
    return found


@contextlib.contextmanager
def _storage_errors(key: str, url: str) -> Iterator[None]:
    """Turn what reaching `url` raised (a missing fsspec package, no credentials, no network) into a
    ConfigError naming the key."""
    try:
        yield
    except ConfigError:
        raise
    except storage.StorageError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"{key}: cannot reach {url}: {type(exc).__name__}: {exc}") from exc


def work_dir_of(cfg: PreprocessConfig) -> str:
    """The folder for intermediate files and logs: `work_dir`, else `output_dir`."""
    return cfg.work_dir if cfg.work_dir is not None else cfg.output_dir


def _validate_storage(cfg: PreprocessConfig) -> None:
    if cfg.work_dir is not None:
        require(not storage.is_remote(cfg.work_dir), "work_dir",
                 f"{cfg.work_dir}: intermediate files and logs need a local or shared-filesystem folder, not a URL")
    if not storage.is_remote(cfg.output_dir):
        return
    require(cfg.work_dir is not None, "work_dir",
             f"output_dir {cfg.output_dir} is a URL: set work_dir to a local or shared-filesystem folder for "
             f"intermediate files and logs")
    bucket = storage.bucket_of(cfg.output_dir)
    with _storage_errors("output_dir", cfg.output_dir):
        storage.resolve(cfg.output_dir, cfg.storage_options)  # its protocol's package is installed
        require(storage.exists(bucket, cfg.storage_options), "output_dir",
                 f"the bucket {bucket} of {cfg.output_dir} does not exist or cannot be reached with these credentials")


def validate(cfg: PreprocessConfig) -> list[SourceConfig]:
    """Check everything types cannot; return the resolved sources."""
    _validate_storage(cfg)
    sources = resolve_sources(cfg)
    names = [s.name for s in sources]
    for i, src in enumerate(sources):
        key = f"sources[{i}]"
        require(src.name not in ("", "???"), f"{key}.name", "every source needs a name")
        require(names.count(src.name) == 1, f"{key}.name", f"duplicate source name {src.name!r}")
        require(src.name.replace("_", "").replace("-", "").isalnum(), f"{key}.name",
                 f"{src.name!r}: use letters, digits, '-' and '_' only")
        require(src.kind in SOURCE_KINDS, f"{key}.kind", f"unknown source kind {src.kind!r}; expected one of {SOURCE_KINDS}")
        require(bool(src.paths), f"{key}.paths", f"source {src.name!r} lists no paths")
        profile = src.quality or src.kind
        require(profile in cfg.quality, f"{key}.quality",
                 f"no quality profile {profile!r}; defined: {sorted(cfg.quality)}")
    require(cfg.components in COMPONENTS, "components", f"{cfg.components!r}: expected one of {COMPONENTS}")
    require(0.0 <= cfg.shards.val_fraction < 1.0, "shards.val_fraction", "must be in [0, 1)")
    require(cfg.shards.max_tokens_per_shard > 0, "shards.max_tokens_per_shard", "must be positive")
    require(cfg.shards.buckets > 0, "shards.buckets", "must be positive")
    require(cfg.shards.chunk_chars >= 0, "shards.chunk_chars", "must be 0 (never cut) or positive")
    for fmt in cfg.shards.formats:
        require(fmt in SHARD_FORMATS, "shards.formats", f"unknown format {fmt!r}; expected some of {SHARD_FORMATS}")
    require("datatrove" in cfg.shards.formats, "shards.formats", "the datatrove .ds format is always written")
    require(cfg.tokenizer.vocab_size >= 300, "tokenizer.vocab_size", "a byte-level BPE needs at least 300 entries")
    if cfg.tokenizer.path is not None:
        require(Path(cfg.tokenizer.path).is_file(), "tokenizer.path", f"{cfg.tokenizer.path} is not a file")
    mh = cfg.dedup.minhash
    for name in ("n_grams", "num_buckets", "hashes_per_bucket"):
        require(getattr(mh, name) > 0, f"dedup.minhash.{name}", "must be positive")
    require(cfg.dedup.find_tasks is None or cfg.dedup.find_tasks > 0, "dedup.find_tasks", "must be positive (or null: executor.tasks)")
    require(mh.bucket_workers is None or mh.bucket_workers > 0, "dedup.minhash.bucket_workers",
             "must be positive (or null: executor.tasks / num_buckets)")
    ex = cfg.executor
    require(ex.kind in ("local", "slurm"), "executor.kind", f"{ex.kind!r}: expected local or slurm")
    require(ex.tasks > 0, "executor.tasks", "must be positive")
    require(cfg.progress_interval_s > 0, "progress_interval_s", "must be positive")
    require(ex.max_array_size > 0 or ex.max_array_size == -1, "executor.max_array_size", "must be positive, or -1 (no limit)")
    _validate_slurm_fields("executor", ex)
    for stage_key, stage in ex.stages.items():
        _validate_slurm_fields(f"executor.stages.{stage_key}", stage)
    require(0 < cfg.language.min_score <= 1, "language.min_score", "must be in (0, 1]")
    require(bool(cfg.language.languages), "language.languages", "list at least one language")
    cfg.logging.validate()
    return sources


def _state_dir(work_dir: str | None, output_dir: str) -> str:
    """Hydra's run folder lives in the work folder; with a URL output_dir and no work_dir (an error that
    `validate` reports) in the system's temporary folder, never in a local folder named like the URL."""
    if work_dir is not None:
        return work_dir
    if storage.is_remote(output_dir):
        import tempfile

        return tempfile.gettempdir()
    return output_dir


# what sbatch --time accepts: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_SLURM_TIME = re.compile(r"(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2}|UNLIMITED|INFINITE)")


def _validate_slurm_fields(prefix: str, settings: ExecutorConfig | StageExecutorConfig) -> None:
    """Ranges and formats of the fields ExecutorConfig and StageExecutorConfig share (a null one is inherited)."""
    if settings.time is not None:
        require(_SLURM_TIME.fullmatch(str(settings.time)) is not None, f"{prefix}.time",
                 f"{settings.time!r} is not a Slurm time limit (HH:MM:SS, D-HH:MM:SS or minutes)")
    for name in ("cpus_per_task", "mem_per_cpu_gb", "tasks_per_job"):
        value = getattr(settings, name)
        require(value is None or value > 0, f"{prefix}.{name}", "must be positive")
    require(settings.workers is None or settings.workers > 0 or settings.workers == -1, f"{prefix}.workers",
             "must be positive, or -1 (no limit)")
    require(settings.randomize_start_duration is None or settings.randomize_start_duration >= 0,
             f"{prefix}.randomize_start_duration", "must be 0 or more seconds")


def check_stage_keys(ex: ExecutorConfig, stage_keys: list[str]) -> None:
    """Every executor.stages entry that sets something names a stage of this run (a misspelt one would
    silently do nothing); conf/executor/slurm.yaml lists every stage with nothing set."""
    for stage_key, stage in ex.stages.items():
        require(stage == StageExecutorConfig() or stage_key in stage_keys, f"executor.stages.{stage_key}",
                 f"no stage {stage_key!r}; stages: {', '.join(stage_keys)}")


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("state_dir"):
        OmegaConf.register_new_resolver("state_dir", _state_dir)
    cs = ConfigStore.instance()
    cs.store(name="preprocess_schema", node=PreprocessConfig)
    cs.store(group="quality", name="profile_schema", node=QualityProfile)
    cs.store(group="logging", name="logging_schema", node=LoggingConfig)
