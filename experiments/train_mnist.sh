#!/usr/bin/env bash
# Train the MNIST models of docs/experiments.md on the fixed 80/20 split of the MNIST test split
# (8000 train / 2000 held-out, --holdout 0.2 --split-seed 0), train the feature classifier of the offline
# quality metric, and sample both models with the metric beside its real-vs-real floor.
#
#   MNIST=DIR OUT=runs/exp DIT_STEPS=10000 UNET_STEPS=2000 LONG_STEPS=0 experiments/train_mnist.sh
#
# LONG_STEPS > 0 also trains `unet_long`, the benchmark model of docs/benchmarks.md ("Trained MNIST model:
# solver x schedule"): the same 16-channel U-Net with EMA 0.999, trained for LONG_STEPS steps.
#
# CPU timings (2-core machine shared with other jobs, one thread per run): DiT (patch 4, width 96, depth 4,
# 0.71 M params) ~0.3 s/step at batch 64; the U-Net (base 16 channels x (1, 2, 2)) see docs/experiments.md.
# The same `pifskit train` lines run under `torchrun --nproc_per_node=N -m pifskit train ...` (DDP).
# A run is continued with `pifskit train --resume $OUT/dit --steps NEW_TOTAL`.
set -euo pipefail
MNIST=${MNIST:?set MNIST to the folder holding the MNIST IDX files}
OUT=${OUT:-runs/exp}
DIT_STEPS=${DIT_STEPS:-10000}
UNET_STEPS=${UNET_STEPS:-2000}
LONG_STEPS=${LONG_STEPS:-0}
THREADS=${THREADS:-1}
DATA="mnist:$MNIST"
COMMON=(--data "$DATA" --holdout 0.2 --split-seed 0 --batch-size 64 --lr 1e-3 --warmup 200 --ema-decay 0.999
        --threads "$THREADS" --log-every 100 --ckpt-every 1000)

[ -f "$OUT/classifier/classifier.pt" ] || pifskit train-classifier --data "$DATA" --holdout 0.2 --split-seed 0 \
  --out "$OUT/classifier" --threads "$THREADS" --json > "$OUT/classifier.out"

train() {  # name steps args...
  local name=$1 steps=$2; shift 2
  if [ -f "$OUT/$name/checkpoint.pt" ]; then
    pifskit train --resume "$OUT/$name" --steps "$steps" --threads "$THREADS" --log-every 100 --ckpt-every 1000
  else
    pifskit train "${COMMON[@]}" "$@" --steps "$steps" --out "$OUT/$name"
  fi
}
train dit "$DIT_STEPS" --model dit --prediction v
train unet "$UNET_STEPS" --model unet --prediction v --base-channels 16 --ema-decay 0.995
MODELS=(dit unet)
if [ "$LONG_STEPS" -gt 0 ]; then
  train unet_long "$LONG_STEPS" --model unet --prediction v --base-channels 16 --ema-decay 0.999
  MODELS+=(unet_long)
fi

for model in "${MODELS[@]}"; do
  pifskit sample --checkpoint "$OUT/$model" --out "$OUT/$model/samples" --n 1000 --steps 50 --clip \
    --classifier "$OUT/classifier" --json > "$OUT/${model}_sample.json"
done
