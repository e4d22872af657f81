#!/usr/bin/env bash
# One prepared run on a lent GPU (about 8 minutes): the device checks of issues 11, 12 and 13.
#   bash benchmarks/gpu_run.sh MNIST_DIR        (MNIST_DIR holds t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)
# Results go to $OUT (or ./gpu-out): env.txt, train.json, quality.json, lyapunov.txt, diffusers.txt, log.txt.
set -u
DATA=${1:?usage: gpu_run.sh MNIST_DIR}
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
RUN=$(mktemp -d)
exec > >(tee "$OUT/log.txt") 2>&1
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA torch here"; exit 1; }
# keep the machine's CUDA torch and install nothing from an index: pifskit from src/, carried wheels (.whl/,
# e.g. diffusers) into a private folder
SITE=$(mktemp -d)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || echo "wheels not installed"
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import pifskit; print('pifskit ok', pifskit.__file__)" || exit 1

echo "== 1. MNIST U-Net on cuda (issue 11 item 7: a model to benchmark on)"
timeout 200 python3 -m pifskit train --data "mnist:$DATA:test" --holdout 0.2 --split-seed 0 --model unet \
  --base-channels 32 --batch-size 256 --lr 1e-3 --warmup 200 --ema-decay 0.999 --steps 3000 \
  --device cuda --precision bf16 --ckpt-minutes 1 --out "$RUN/unet" --json > "$OUT/train.json" \
  || echo "train ended early (rc=$?): continuing from its last checkpoint" 
echo "== 2. classifier floor + DDIM NFE 10 quality per spacing (1000 samples, 2 seeds)"
timeout 90 python3 -m pifskit train-classifier --data "mnist:$DATA:test" --holdout 0.2 --split-seed 0 \
  --out "$RUN/clf" --json > "$RUN/clf.json" || echo "classifier failed"
python3 - "$RUN" "$OUT" "$DATA" <<'PY'
import json, subprocess, sys
run, out, data = sys.argv[1], sys.argv[2], sys.argv[3]
design = subprocess.run([sys.executable, "-m", "pifskit", "design", "steps", "--schedule", "cosine-discrete",
                         "--steps", "10", "--solver", "ddim", "--data", f"mnist:{data}:test", "--json"],
                        capture_output=True, text=True, timeout=120)
ts = ",".join(str(int(t)) for t in json.loads(design.stdout)["timesteps"]) if design.returncode == 0 else None
res = {"pifskit_timesteps": ts}
choices = [(sp, ["--spacing", sp]) for sp in ("trailing", "logsnr", "karras", "leading")]
if ts:
    choices.append(("pifskit-ddim-data", ["--timesteps", ts]))
for sp, flag in choices:
    for seed in (0, 1):
        p = subprocess.run([sys.executable, "-m", "pifskit", "sample", "--checkpoint", f"{run}/unet", "--steps", "10",
                            *flag, "--n", "1000", "--seed", str(seed), "--classifier", f"{run}/clf",
                            "--device", "cuda", "--out", f"{run}/s-{sp}-{seed}", "--json"],
                           capture_output=True, text=True, timeout=60)
        try:
            d = json.loads(p.stdout)
            res[f"{sp}/{seed}"] = d.get("quality", d)
        except Exception:
            res[f"{sp}/{seed}"] = {"error": p.stderr[-300:]}
        print(sp, seed, json.dumps(res[f"{sp}/{seed}"])[:300], flush=True)
json.dump(res, open(f"{out}/quality.json", "w"), indent=1)
PY
echo "== 3. Krylov Lyapunov vs jacrev+SVD on cuda (issue 12 item 4)"
timeout 150 python3 benchmarks/bench_lyapunov.py --k 32 --steps 5 --dims 784 3072 --device cuda > "$OUT/lyapunov.txt" 2>&1 \
  || echo "lyapunov bench ended (rc=$?)"
cat "$OUT/lyapunov.txt" | tail -20
echo "== 4. analyze-model --diffusers at SD1.5 size (issue 13)"
if python3 -c "import diffusers, transformers" 2>/dev/null; then
  timeout 150 python3 benchmarks/bench_diffusers_analyze.py --device cuda --latent-size 16 --half bfloat16 \
    > "$OUT/diffusers.txt" 2>&1 || echo "diffusers bench ended (rc=$?)"
  tail -20 "$OUT/diffusers.txt"
else
  echo "diffusers/transformers not installed here: skipped" | tee "$OUT/diffusers.txt"
fi
echo done
