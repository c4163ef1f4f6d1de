#!/usr/bin/env bash
# The whole path on the bundled sample corpus: preprocess, train a tiny model with 2 ranks under
# ZeRO-2 (DeepSpeed on CPU over gloo, or on GPUs where there are), evaluate it, sample from it.
#   STEPS=300 bash scripts/demo.sh      (5 minutes on 2 CPU cores: 1.5 preprocessing, 3.5 training and the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=outputs/data
RUN=outputs/train

echo "== 1/4 preprocess data/sample -> $DATA"
$PY -m data_pipeline output_dir=$DATA

echo "== 2/4 train the tiny model, 2 ranks, ZeRO-2 -> $RUN"
$PY -m torch.distributed.run --nproc_per_node 2 --master_port "${MASTER_PORT:-29511}" -m pretrain.train \
  data.path=$DATA output_dir=$RUN model=tiny deepspeed=zero2 max_steps="${STEPS:-300}" \
  optim.lr=2e-3 optim.warmup_steps=30 batch.micro_batch_size=8 logging.log_every=25 \
  eval.every_steps=100 eval.batches=8 checkpoint.every_steps=100

echo "== 3/4 evaluate the last checkpoint"
$PY -m pretrain.evaluate --checkpoint $RUN/checkpoints --max-batches 16

echo "== 4/4 samples"
$PY -m pretrain.generate --checkpoint $RUN/checkpoints --max-new-tokens 48 --temperature 0.8 --top-k 40 --seed 1 \
  --prompt "It is a truth universally acknowledged" --prompt "The President said that" --prompt "Call me"
