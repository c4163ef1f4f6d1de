"""`pretrain`, `monitoring` and `shard_format` import nothing of `data_pipeline`; `shard_format` and `monitoring`
import nothing of `pretrain`; `shard_format` nothing of `monitoring`."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_packages(path: Path) -> set[str]:
    """The top-level package of every import in the file, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("pretrain", {"data_pipeline"}),
                                                    ("monitoring", {"data_pipeline", "pretrain"}),
                                                    ("shard_format", {"data_pipeline", "pretrain", "monitoring"})])
def test_package_imports_stay_on_its_side(package, forbidden):
    offenders = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) & forbidden)
                 for path in sorted((ROOT / package).rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_shard_format_and_pretrain_data_import_without_data_pipeline():
    # a finder that refuses data_pipeline: importing it anywhere below raises ModuleNotFoundError
    code = ("import sys\n"
            "class Refuse:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'data_pipeline':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Refuse())\n"
            "import shard_format.errors, shard_format.atomic, shard_format.storage, shard_format.shards\n"
            "import shard_format.manifest, pretrain.config, pretrain.data, pretrain.checkpoint\n"
            "import monitoring.config, monitoring.wandb_run, monitoring.dataset, pretrain.metrics\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
