#!/usr/bin/env bash
# Create .venv (if missing) and install torch, this project and its dependencies into it.
#   TORCH_SPEC   what to install for torch (default: torch==2.13.0, the CPU wheel on these machines).
#                On a GPU cluster: TORCH_SPEC="torch==2.13.0" PIP_EXTRA_INDEX_URL=<your CUDA wheel index>,
#                or install torch into .venv yourself first (an installed torch is kept).
#   EXTRAS       project extras (default: dev — pytest and spaCy, the benchmark baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first: a dependency that asks for plain "torch" would otherwise pull a multi-GB CUDA build
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
python -m pip install -q -e ".[${EXTRAS:-dev}]"
python - <<'PY'
from importlib.metadata import version
print(", ".join(f"{name} {version(name)}" for name in ("torch", "deepspeed", "datatrove", "hydra-core", "wandb")))
PY
