"""Local paths and s3:// URLs (a local moto S3 server): atomic writes and uploads, listing and reading sources
from a bucket exactly like a local folder, and clear errors for missing buckets, prefixes and packages."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fsspec.registry import known_implementations

from data_pipeline.bad_records import read_bad_records
from data_pipeline.config import ConfigError, PreprocessConfig, SourceConfig, resolve_sources, validate, work_dir_of
from data_pipeline.readers import SourceReader, list_source_files
from data_pipeline.tokenizer import save_hf_tokenizer, train_bpe
from shard_format import manifest as manifest_lib
from shard_format import storage
from tests.s3_server import s3_bucket, s3_server  # noqa: F401  (fixtures)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
KINDS = ("web", "news", "books")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read_sources(sources: list[SourceConfig], bad_folder: Path):
    """(listed files, documents as (id, text, metadata), bad records) of reading the sources in one task."""
    files = list_source_files(sources)
    docs = list(SourceReader(files, bad_folder).run(None, rank=0, world_size=1))
    return files, [(d.id, d.text, d.metadata) for d in docs], read_bad_records(bad_folder)


def sample_sources(root: str) -> list[SourceConfig]:
    return resolve_sources(PreprocessConfig(input_dir=root))


# ---------------------------------------------------------------------------------------------------------
# Paths and URLs


@pytest.mark.parametrize(
    "path, protocol, remote",
    [
        ("data/sample", None, False),
        ("/abs/path", None, False),
        ("file:///abs/path", "file", False),
        ("C://windows/drive", None, False),
        ("s3://bucket/prefix", "s3", True),
        ("gs://bucket", "gs", True),
        ("simplecache::s3://bucket/x", "simplecache", True),
    ],
)
def test_protocols(path, protocol, remote):
    assert storage.protocol_of(path) == protocol and storage.is_remote(path) == remote


def test_join_keeps_urls_intact():
    assert storage.join("s3://bucket/prefix/", "a", "b.json") == "s3://bucket/prefix/a/b.json"
    assert storage.join("out", "manifest.json") == os.path.join("out", "manifest.json")
    assert storage.local_path("file:///tmp/x") == "/tmp/x"
    assert storage.bucket_of("s3://bucket/a/b") == "s3://bucket"


# ---------------------------------------------------------------------------------------------------------
# Writing


def test_local_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "new" / "folder" / "file.json"
    storage.write_bytes_atomic(path, b"first")
    storage.write_text_atomic(path, "second, longer ✓")
    assert path.read_text(encoding="utf-8") == "second, longer ✓"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # like a file written with open()

    with pytest.raises(TypeError):
        storage.write_bytes_atomic(path, "not bytes")  # fails while writing: the old file stays whole
    assert path.read_text(encoding="utf-8") == "second, longer ✓"
    assert os.listdir(path.parent) == ["file.json"]  # no temporary files left


@pytest.fixture(params=["local", "s3"])
def destination(request, tmp_path) -> str:
    """An output folder: a local one, or a prefix in a bucket of the local S3 server."""
    if request.param == "local":
        return str(tmp_path / "out")
    return storage.join(request.getfixturevalue("s3_bucket"), "runs", "out")


def test_write_read_and_upload(destination, tmp_path):
    url = storage.join(destination, "dir", "note.txt")
    assert not storage.exists(url)
    storage.write_text_atomic(url, "hello ✓")
    assert storage.read_bytes(url) == "hello ✓".encode() and storage.exists(url)
    assert storage.isdir(storage.join(destination, "dir"))

    staged = tmp_path / "staged"
    shards = {"train/web/000.ds": b"\x00\x01" * 1000, "train/web/000.ds.index": b"idx", "val/news/000.ds": b"v"}
    for relpath, data in shards.items():
        write(staged / relpath, data)
    uploaded = storage.upload_folder(staged, storage.join(destination, "shards"))
    assert uploaded == [storage.join(destination, "shards", *rel.split("/")) for rel in sorted(shards)]
    assert {rel: storage.read_bytes(storage.join(destination, "shards", rel)) for rel in shards} == shards

    single = storage.upload_file(staged / "val" / "news" / "000.ds", storage.join(destination, "one.ds"))
    assert storage.read_bytes(single) == b"v"


def test_manifest_and_tokenizer_written_to_a_bucket_equal_the_local_files(s3_bucket, tmp_path):
    manifest = {"format_version": manifest_lib.FORMAT_VERSION, "splits": {}, "note": "ünïcode"}
    tokenizer = train_bpe(["the quick brown fox jumps over the lazy dog " * 20] * 10, 300, 2, "<|endoftext|>")
    local = tmp_path / "out"

    assert manifest_lib.write(manifest, local) == local / "manifest.json"
    assert manifest_lib.write(manifest, f"{s3_bucket}/out") == f"{s3_bucket}/out/manifest.json"
    assert save_hf_tokenizer(tokenizer, local / "tokenizer", "<|endoftext|>") == local / "tokenizer" / "tokenizer.json"
    assert save_hf_tokenizer(tokenizer, f"{s3_bucket}/out/tokenizer", "<|endoftext|>") == (
        f"{s3_bucket}/out/tokenizer/tokenizer.json"
    )

    local_files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert local_files == ["manifest.json", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer.json",
                           "tokenizer/tokenizer_config.json"]  # fmt: skip
    for relpath in local_files:
        assert storage.read_bytes(f"{s3_bucket}/out/{relpath}") == (local / relpath).read_bytes()
    tokenizer.save(str(tmp_path / "saved.json"))  # save_hf_tokenizer keeps the bytes Tokenizer.save writes
    assert (local / "tokenizer" / "tokenizer.json").read_bytes() == (tmp_path / "saved.json").read_bytes()
    assert manifest_lib.read(local) == manifest


# ---------------------------------------------------------------------------------------------------------
# Sources in a bucket


def test_the_sample_in_a_bucket_reads_exactly_like_the_local_folder(s3_bucket, tmp_path):
    root = storage.join(s3_bucket, "corpora", "sample")
    storage.upload_folder(SAMPLE, root)

    remote_sources = sample_sources(root)
    assert [(s.name, s.paths) for s in remote_sources] == [(kind, [f"{root}/{kind}"]) for kind in KINDS]
    local_files, local_docs, local_bad = read_sources(sample_sources(str(SAMPLE)), tmp_path / "local")
    remote_files, remote_docs, remote_bad = read_sources(remote_sources, tmp_path / "remote")

    assert [f.path for f in remote_files] == [f"{root}/{f.source}/{f.relpath}" for f in local_files]
    strip_path = [{**vars(f), "path": None} for f in local_files]
    assert [{**vars(f), "path": None} for f in remote_files] == strip_path
    assert len(remote_docs) == 139 and remote_docs == local_docs  # ids, text and metadata
    assert remote_bad == local_bad == []


LISTING_TREE = ["b.txt", "a/c.jsonl", "a/d/e.html", "a/d/f.jsonl", "notes.csv", ".hidden.txt", ".git/config.txt",
                "a/.cache/x.txt", "other/one.jsonl", "other/sub/two.jsonl"]  # fmt: skip


@pytest.mark.parametrize(
    "paths",
    [["in"], ["in/"], ["in/a/*.jsonl"], ["in/**/*.jsonl"], ["in/a/d/e.html"], ["in/*"],
     ["in/other", "in/a/c.jsonl", "in/a/*.jsonl"], ["in/a/d", "in/other/sub"]],  # fmt: skip
    ids=["folder", "folder/", "glob", "recursive glob", "one file", "glob of folders", "several", "two folders"],
)
def test_listing_a_bucket_gives_the_files_and_ids_of_a_local_listing(s3_bucket, tmp_path, paths):
    for name in LISTING_TREE:
        write(tmp_path / "in" / name, "{}")
    storage.upload_folder(tmp_path / "in", f"{s3_bucket}/in")

    local = list_source_files([SourceConfig(name="s", paths=[str(tmp_path / p) for p in paths])])
    remote = list_source_files([SourceConfig(name="s", paths=[f"{s3_bucket}/{p}" for p in paths])])
    assert [(f.relpath, f.fmt) for f in remote] == [(f.relpath, f.fmt) for f in local]
    assert [f.path for f in remote] == [f"{s3_bucket}/{Path(f.path).relative_to(tmp_path).as_posix()}" for f in local]


def test_every_format_and_bad_input_read_from_a_bucket_like_from_disk(s3_bucket, tmp_path):
    import io

    from warcio.warcwriter import WARCWriter

    folder = tmp_path / "mixed"
    lines = b"".join(json.dumps({"id": i, "text": f"line {i}", "title": "T"}).encode() + b"\n" for i in range(500))
    write(folder / "a.jsonl.zst", zstandard.ZstdCompressor().compress(lines))
    write(folder / "b.jsonl.gz", gzip.compress(lines)[:-200])  # truncated: kept lines, then one bad record
    write(folder / "c.jsonl", lines + b"{broken\n")
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["row zero", "row one"]}), folder / "d.parquet")
    write(folder / "e.html", "<html><head><meta charset='latin-1'></head><p>Caf\xe9</p></html>".encode("latin-1"))
    write(folder / "g.txt", b"caf\xe9 \xff")  # invalid UTF-8: repaired and reported
    warc = io.BytesIO()
    writer = WARCWriter(warc, gzip=True)
    for i in range(3):
        writer.write_record(writer.create_warc_record(f"https://example.org/{i}", "conversion",
                                                      payload=io.BytesIO(f"text {i}".encode()),
                                                      warc_content_type="text/plain"))  # fmt: skip
    write(folder / "f.wet.gz", warc.getvalue())
    storage.upload_folder(folder, f"{s3_bucket}/mixed")

    _, local_docs, local_bad = read_sources([SourceConfig(name="m", paths=[str(folder)])], tmp_path / "local")
    _, remote_docs, remote_bad = read_sources([SourceConfig(name="m", paths=[f"{s3_bucket}/mixed"])], tmp_path / "r")

    assert remote_docs == local_docs
    assert {d[2]["format"] for d in remote_docs} == {"jsonl", "parquet", "html", "wet", "text"}
    assert [(b.location, b.error) for b in remote_bad] == [(b.location, b.error) for b in local_bad]
    assert {d[2]["format"]: d[1] for d in remote_docs}["html"].startswith("<html>")
    # the truncated .gz, the broken JSON line, the repaired text
    assert sorted(b.file for b in remote_bad) == [f"{s3_bucket}/mixed/{n}" for n in ("b.jsonl.gz", "c.jsonl", "g.txt")]


def test_a_remote_file_is_streamed_not_fetched_whole(s3_bucket, monkeypatch):
    size = 6 * storage.REMOTE_BLOCK_SIZE
    lines = b"".join(json.dumps({"text": os.urandom(600).hex()}).encode() + b"\n" for _ in range(size // 1000))
    compressed = gzip.compress(lines, compresslevel=1)
    assert len(compressed) > 3 * storage.REMOTE_BLOCK_SIZE
    storage.write_bytes_atomic(f"{s3_bucket}/big.jsonl.gz", compressed)

    opened, open_binary = [], storage.open_binary

    def open_and_keep(path, storage_options=None):
        stream = open_binary(path, storage_options)
        opened.append(stream.raw)  # the fsspec file under the buffer
        return stream

    monkeypatch.setattr(storage, "open_binary", open_and_keep)
    docs = SourceReader(list_source_files([SourceConfig(name="big", paths=[f"{s3_bucket}/big.jsonl.gz"])])).run()
    assert next(docs).id == "big/big.jsonl.gz#0"
    (remote_file,) = opened
    assert remote_file.cache.total_requested_bytes <= 2 * storage.REMOTE_BLOCK_SIZE < len(compressed)
    assert sum(1 for _ in docs) + 1 == lines.count(b"\n")


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_missing_buckets_and_prefixes_are_config_errors_naming_key_and_url(s3_bucket, tmp_path):
    storage.write_text_atomic(f"{s3_bucket}/corpus/news/a.jsonl", '{"text": "x"}\n')

    for input_dir in ("s3://no-such-bucket/corpus", f"{s3_bucket}/no-such-prefix"):
        with pytest.raises(ConfigError, match=f"^input_dir: {input_dir} is not a directory"):
            resolve_sources(PreprocessConfig(input_dir=input_dir))
    with pytest.raises(ConfigError, match="^input_dir: .* has none of the folders web/, news/, books/"):
        resolve_sources(PreprocessConfig(input_dir=f"{s3_bucket}/corpus/news"))
    assert [s.name for s in resolve_sources(PreprocessConfig(input_dir=f"{s3_bucket}/corpus"))] == ["news"]

    for url, message in [
        (f"{s3_bucket}/corpus/missing", "does not exist"),
        ("s3://no-such-bucket/corpus", "does not exist"),
        (f"{s3_bucket}/corpus/*.parquet", "matches nothing"),
    ]:
        with pytest.raises(ConfigError) as err:
            list_source_files([SourceConfig(name="ok", paths=[f"{s3_bucket}/corpus"]),
                               SourceConfig(name="bad", paths=[url])])  # fmt: skip
        assert str(err.value).startswith("sources[1].paths: source 'bad'")
        assert message in str(err.value) and url in str(err.value)

    with pytest.raises(ConfigError, match="^sources\\[0\\].paths: .*mixes local paths and URLs"):
        list_source_files([SourceConfig(name="x", paths=[str(tmp_path), f"{s3_bucket}/corpus"])])

    with pytest.raises(ConfigError, match="^output_dir: the bucket s3://no-such-bucket of s3://no-such-bucket/out"):
        validate(PreprocessConfig(output_dir="s3://no-such-bucket/out", work_dir=str(tmp_path)))


def test_a_url_output_needs_a_local_work_dir(tmp_path):
    with pytest.raises(ConfigError, match="^work_dir: output_dir s3://bucket/out is a URL: set work_dir"):
        validate(PreprocessConfig(output_dir="s3://bucket/out"))
    with pytest.raises(ConfigError, match="^work_dir: s3://bucket/work: .* not a URL"):
        validate(PreprocessConfig(output_dir=str(tmp_path), work_dir="s3://bucket/work"))
    assert work_dir_of(PreprocessConfig(output_dir="out")) == "out"
    assert work_dir_of(PreprocessConfig(output_dir="s3://b/out", work_dir="/scratch/run")) == "/scratch/run"


def test_a_protocol_without_its_package_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(known_implementations, "fakefs", {"class": "fakefs_pkg.FakeFileSystem",
                                                          "err": "Install fakefs_pkg to access fakefs"})  # fmt: skip
    url = "fakefs://bucket/corpus"
    with pytest.raises(storage.StorageError, match="fakefs:// URLs need the package fakefs_pkg, which is not installed"):
        storage.resolve(url)
    with pytest.raises(ConfigError, match=f"^input_dir: {url}: .*pip install fakefs_pkg"):
        resolve_sources(PreprocessConfig(input_dir=url))
    with pytest.raises(ConfigError, match=f"^sources\\[0\\].paths: source 'x': {url}: .*package fakefs_pkg"):
        list_source_files([SourceConfig(name="x", paths=[url])])
    with pytest.raises(ConfigError, match="^output_dir: fakefs://bucket/out: .*package fakefs_pkg"):
        validate(PreprocessConfig(output_dir="fakefs://bucket/out", work_dir=str(tmp_path)))
    with pytest.raises(storage.StorageError, match="fsspec knows no filesystem for the protocol 'nosuchfs'"):
        storage.resolve("nosuchfs://x")


def test_local_runs_do_not_import_fsspec(tmp_path):
    import subprocess
    import sys

    code = ("import sys, data_pipeline.readers, data_pipeline.config, shard_format.manifest, data_pipeline.tokenizer;"
            "from data_pipeline.config import PreprocessConfig, resolve_sources;"
            f"from data_pipeline.readers import list_source_files; list_source_files(resolve_sources("
            f"PreprocessConfig(input_dir={str(SAMPLE)!r})));"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 's3fs', 'botocore')))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
