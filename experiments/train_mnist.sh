#!/usr/bin/env bash
# Train the small DiT and U-Net on MNIST (fixed 80/20 split of the files in $MNIST), train the
# feature classifier for the offline quality metric, and sample both models.
#
#   MNIST=/path/to/mnist STEPS=20000 OUT=runs/mnist experiments/train_mnist.sh
#
# CPU-feasible defaults (STEPS=1200: ~5 min for the DiT at ~0.2 s/step, batch 64, one thread;
# the U-Net is ~3-4x slower per step). The same `pifskit train` line runs under
#   torchrun --nproc_per_node=N -m pifskit train ...
# for multi-GPU runs (DDP; bf16 autocast on GPU). Each run resumes with
#   pifskit train --resume $OUT/dit --steps NEW_TOTAL
set -euo pipefail
MNIST=${MNIST:-../shared/data/mnist}
STEPS=${STEPS:-1200}
OUT=${OUT:-runs/mnist}
THREADS=${THREADS:-1}
DATA="mnist:$MNIST"
COMMON=(--data "$DATA" --holdout 0.2 --split-seed 0 --batch-size 64 --lr 1e-3 --warmup 100 --ema-decay 0.995
        --threads "$THREADS" --log-every 100 --ckpt-every 500)

for model in dit unet; do
  if [ -f "$OUT/$model/checkpoint.pt" ]; then
    pifskit train --resume "$OUT/$model" --steps "$STEPS" --threads "$THREADS" --log-every 100 --ckpt-every 500
  else
    pifskit train "${COMMON[@]}" --model "$model" --steps "$STEPS" --out "$OUT/$model"
  fi
done

[ -f "$OUT/classifier/classifier.pt" ] || pifskit train-classifier --data "$DATA" --holdout 0.2 --split-seed 0 \
  --out "$OUT/classifier" --threads "$THREADS"

for model in dit unet; do
  pifskit sample --checkpoint "$OUT/$model" --out "$OUT/$model/samples" --n 400 --steps 50 --clip \
    --classifier "$OUT/classifier"
done
