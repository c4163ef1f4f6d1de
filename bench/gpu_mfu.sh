#!/usr/bin/env bash
# Tokens/s and MFU on one GPU: the 1.3b preset (1.1B parameters), bf16, ZeRO-2, sequence length 2048,
# about 5 minutes. Target: >= 55% MFU on H100/H200 (dense bf16 peak 989 TFLOP/s).
#   bash bench/gpu_mfu.sh                  # in this project's .venv on a GPU node
# On a machine that has torch but not the rest, install the wheels built beside this project first:
#   pip wheel --no-deps -w bench/wheels deepspeed hydra-core omegaconf antlr4-python3-runtime wandb ...
#   (then this script installs bench/wheels/*.whl with --no-deps)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if compgen -G "bench/wheels/*.whl" > /dev/null; then $PY -m pip install -q --no-deps bench/wheels/*.whl; fi
DATA=${DATA:-outputs/synthetic_shards}
OUT=${OUT:-outputs/gpu_mfu}
[[ -f $DATA/manifest.json ]] || $PY bench/synthetic_shards.py --out "$DATA" --tokens 400000000 --vocab 32000
rm -rf "$OUT"
$PY -m pretrain.train data.path="$DATA" output_dir="$OUT" model=1.3b model.max_seq_len=2048 \
  deepspeed=zero2 deepspeed.precision=bf16 batch.micro_batch_size="${MICRO_BATCH:-8}" \
  max_steps="${STEPS:-300}" optim.warmup_steps=10 logging.mode=disabled logging.log_every=20 \
  eval.every_steps=0 checkpoint.every_steps=0 checkpoint.resume=none threads_per_rank=8 compile="${COMPILE:-false}"
$PY - "$OUT/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "speed/tokens_per_s" in l]
steady = rows[1:] or rows  # the first window includes warm-up
tps = sum(r["speed/tokens_per_s"] for r in steady) / len(steady)
mfu = [r["speed/mfu"] for r in steady if r.get("speed/mfu") is not None]
print(f"tokens/s {tps:,.0f}   MFU " + (f"{100 * sum(mfu) / len(mfu):.1f}%" if mfu else "n/a (unknown device: set peak_tflops)"))
PY
