#!/usr/bin/env bash
# Wheels for a GPU machine that has torch, numpy and pytest but none of the rest (a bare CUDA image), so
# that bench/gpu_check.sh can run there: what `pretrain` and the gpu-marked tests import, for CPython
# $PY_VERSION (default 3.12) on x86-64 Linux, into $WHEELS (default .whl/). Run it here, in .venv:
#   bash bench/gpu_wheels.sh && du -sh .whl
# DeepSpeed and antlr4 are source-only on PyPI and pure Python: built here without isolation (DeepSpeed's
# setup imports torch; its ops are compiled where they are used). The others are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${WHEELS:-.whl}
PYV=${PY_VERSION:-3.12}
mkdir -p "$OUT"
version() { $PY -c "from importlib.metadata import version; print(version('$1'))"; }
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "deepspeed==$(version deepspeed)" \
  "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
pins=()
for name in hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions hydra-core omegaconf humanize; do
  pins+=("$name==$(version "$name")")
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${platforms[@]}" \
  -d "$OUT" "${pins[@]}"
ls "$OUT"
