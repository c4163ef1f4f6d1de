"""Bad configuration fails in seconds, before any work, with a message naming the key."""

import pytest

from .conftest import SAMPLE, run_pipeline_cli


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dedup.minhash.ngrams=3"], "dedup.minhash.ngrams"),
        (["dedup.minhash.n_grams=five"], "dedup.minhash.n_grams"),
        (["input_dir=/does/not/exist"], "input_dir"),
        (["input_dir=null", "sources=[{name: x, kind: podcasts, paths: [data/sample/news]}]"], "sources[0].kind"),
        (["input_dir=null", "sources=[{name: x, kind: news, paths: [/no/such/file.jsonl]}]"], "sources[0].paths"),
        (["shards.formats=[parquet]"], "shards.formats"),
        (["components=turbo"], "components"),
        (["executor.stages.tokenize.tme=01:00:00"], "executor.stages.tokenize.tme"),
        (["executor=slurm", "executor.stages.shrad.time=01:00:00"], "executor.stages.shrad"),
        (["dedup.minhash.enabled=false", "executor=slurm", "executor.partition=p", "executor.stages.near_clusters.time=9"],
         "executor.stages.near_clusters: no stage 'near_clusters'"),
        (["executor=slurm", "executor.partition=p", "executor.stages.tokenize.time=2h"], "executor.stages.tokenize.time"),
    ],
)
def test_bad_config_is_a_clear_error_before_any_work(tmp_path, overrides, message):
    proc = run_pipeline_cli(tmp_path / "out", *overrides, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "out" / "work").exists()


def test_empty_input_is_a_clear_error(tmp_path):
    (tmp_path / "in" / "news").mkdir(parents=True)
    proc = run_pipeline_cli(tmp_path / "out", f"input_dir={tmp_path / 'in'}", check=False)
    assert proc.returncode == 2 and "no readable input files" in proc.stderr


def test_slurm_executor_renders_its_job_arrays_without_submitting(tmp_path):
    out = tmp_path / "out"
    proc = run_pipeline_cli(out, f"input_dir={SAMPLE}", "executor=slurm", "executor.partition=cpu",
                            "executor.tasks=8", "executor.dry_run=true", "executor.time=01:00:00",
                            "executor.stages.tokenize.time=00:30:00", "executor.stages.near_clusters.mem_per_cpu_gb=64")
    assert "nothing submitted" in proc.stdout
    scripts = sorted((out / "slurm_scripts").glob("*.sbatch"))
    assert [s.name for s in scripts][:2] == ["01_clean.sbatch", "02_exact_signatures.sbatch"]
    clean = scripts[0].read_text()
    assert "#SBATCH --partition=cpu" in clean and "#SBATCH --time=01:00:00" in clean
    assert "#SBATCH --array=0-7" in clean
    assert "--qos" not in clean  # optional: many clusters have none
    assert "#SBATCH --array=0-7" in scripts[2].read_text()  # dedup.find_tasks=null: a hash bucket per task
    assert "launch_pickled_pipeline" in clean and "--requeue" in clean
    by_key = {s.stem.split("_", 1)[1]: s.read_text() for s in scripts}
    assert "#SBATCH --time=00:30:00" in by_key["tokenize"]  # the stage's own
    assert "#SBATCH --mem-per-cpu=64G" in by_key["near_clusters"] and "#SBATCH --time=24:00:00" in by_key["near_clusters"]
    assert "#SBATCH --mem-per-cpu=16G" in by_key["tokenizer"]  # a single-task stage's built-in default
