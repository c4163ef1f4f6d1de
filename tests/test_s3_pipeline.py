"""The pipeline end to end on object storage: raw files in a bucket, shards, manifest, tokenizer and report
written to a bucket (a local S3 server), byte-identical to a local run of the same files."""

import json

import pytest

from tests.s3_server import s3_bucket, s3_server  # noqa: F401

from .conftest import SAMPLE, SAMPLE_OVERRIDES, run_pipeline_cli

pytestmark = pytest.mark.slow


def test_a_run_from_and_to_a_bucket_equals_the_local_run(sample_run, s3_bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.put(str(SAMPLE), f"{s3_bucket}/raw", recursive=True)
    overrides = [o for o in SAMPLE_OVERRIDES if not o.startswith("input_dir=")]
    run = run_pipeline_cli(f"{s3_bucket}/out", f"input_dir={s3_bucket}/raw", f"work_dir={tmp_path / 'work'}", *overrides)
    assert "Tokens per source" in run.stdout

    local = {str(p.relative_to(sample_run)): p.read_bytes() for pattern in ("train/*", "val/*", "tokenizer/*")
             for p in sorted(sample_run.glob(pattern))}
    remote = {path.split("/out/", 1)[1]: fs.cat_file(path) for pattern in ("train/*", "val/*", "tokenizer/*")
              for path in sorted(fs.glob(f"{s3_bucket}/out/{pattern}"))}
    assert remote.keys() == local.keys() and remote == local
    assert not list((tmp_path / "work" / "work" / "shard_staging").rglob("*.ds")), "staged shards are removed once uploaded"

    manifest = json.loads(fs.cat_file(f"{s3_bucket}/out/manifest.json"))
    local_manifest = json.loads((sample_run / "manifest.json").read_text())
    assert manifest["config"].pop("input_dir") == f"{s3_bucket}/raw"
    local_manifest["config"].pop("input_dir")
    assert manifest == local_manifest  # everything else: shards, sha256s, tokens, the rest of the config
    report = json.loads(fs.cat_file(f"{s3_bucket}/out/report.json"))
    assert report["tokens"] == json.loads((sample_run / "report.json").read_text())["tokens"]
    assert not fs.exists(f"{s3_bucket}/out/work") and not fs.exists(f"{s3_bucket}/out/logs")
