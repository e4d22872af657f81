#!/usr/bin/env bash
# The measurements of docs/experiments.md on trained checkpoints (after experiments/train_mnist.sh and
# experiments/weighting_regularizer.py), then the figures and tables.
#
#   OUT=runs/exp DIT=runs/exp/dit10k UNET=runs/exp/unet PY=.venv/bin/python experiments/run_analysis.sh
# (docs/experiments.md used DIT=runs/exp/dit10k, a copy of the DiT's 10 000-step checkpoint.)
set -euo pipefail
OUT=${OUT:-runs/exp}
DIT=${DIT:-$OUT/dit}
UNET=${UNET:-$OUT/unet}
PY=${PY:-python}
# two regimes + L_B(D_t) vs L*_t: 20-step trailing DDIM chain, exact 784 x 784 Jacobians at 2 states per step,
# attention statistics over 16 trajectories (DiT)
$PY experiments/jacobian_analysis.py --checkpoint "$DIT" --steps 20 --trajectories 16 --points 2 --out "$OUT/jac_dit.json"
$PY experiments/jacobian_analysis.py --checkpoint "$UNET" --steps 20 --trajectories 2 --points 2 --out "$OUT/jac_unet.json"
# numerical Kaplan-Yorke dimension (top-k, float32) vs the analytic surrogate on the same chain
$PY experiments/kaplan_yorke.py --checkpoint "$DIT" --steps 20 --k 784 --trajectories 4 --refine 0 --chunk 196 \
  --out "$OUT/ky_dit_full.json"
$PY experiments/kaplan_yorke.py --checkpoint "$DIT" --steps 20 --k 192 --trajectories 2 --refine 1 --out "$OUT/ky_dit_k192.json"
$PY experiments/kaplan_yorke.py --checkpoint "$UNET" --steps 20 --k 192 --trajectories 2 --refine 1 --out "$OUT/ky_unet_k192.json"
$PY experiments/make_figures.py --runs "$OUT" --figures docs/figures/experiments
