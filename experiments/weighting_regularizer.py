"""Loss / quality against training steps at equal compute: weighting uniform / min-snr / geometric and the
PIFS regulariser on / off (theory section 6 II and section 2).

    python experiments/weighting_regularizer.py --steps 500 1000 1500 --seeds 0 \
        --out runs/exp/ablation --classifier runs/exp/classifier

Each variant is one `pifskit train` run on the fixed 80/20 MNIST split, trained to each milestone in turn
with `pifskit train --resume` (exact resume, so this equals one uninterrupted run). At every milestone the
EMA model is scored by
  * the UNWEIGHTED eps-MSE on 1000 held-out images (same images / timesteps / noise for every run; the
    training losses of different weightings are on different scales and are not comparable),
  * the classifier-feature Frechet distance (NOT Inception FID) and precision / recall of --n samples
    (DDIM, --sample-steps trailing steps, clip), beside the real-vs-real floor at the same n.
Writes OUT/summary.json (one record per run and milestone) and OUT/curves.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "uniform": [],
    "min-snr": ["--weighting", "min-snr", "--gamma", "5"],
    "geometric": ["--weighting", "geometric"],
    "uniform+reg": ["--reg-weight", "0.1", "--reg-blocks", "4", "--reg-fraction", "0.25"],
    # v-prediction pair: the x0 estimate a x - s v stays bounded at the chain's first level (a ~ 5e-5), where
    # the eps-model's (x - s eps) / a amplifies errors ~2e4-fold and dominates the regulariser
    "v": ["--prediction", "v"],
    "v+reg": ["--prediction", "v", "--reg-weight", "0.1", "--reg-blocks", "4", "--reg-fraction", "0.25"],
}
COMMON = ["--batch-size", "64", "--lr", "1e-3", "--warmup", "200", "--ema-decay", "0.995"]


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data spec, e.g. mnist:DIR (the MNIST IDX folder)")
    p.add_argument("--model", default="dit")
    p.add_argument("--steps", type=int, nargs="+", default=[500, 1000, 1500], help="milestones (totals)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", default="runs/exp/ablation")
    p.add_argument("--classifier", default="runs/exp/classifier")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from _common import heldout_eps_mse, load, load_split, sample_model

    from pifskit.torch.quality import quality_report

    _, held = load_split(a.data)
    pk = [sys.executable, "-m", "pifskit"]
    summary_path = Path(a.out) / "summary.json"
    rows = json.loads(summary_path.read_text()) if summary_path.exists() else []
    done = {(r["variant"], r["seed"], r["step"]) for r in rows}
    # milestone-major order: every variant reaches a milestone before any goes further, so an interrupted
    # sweep still holds a complete equal-compute comparison
    for total in a.steps:
        for seed in a.seeds:
            for variant in a.variants:
                out = Path(a.out) / f"{variant}-s{seed}"
                if (variant, seed, total) in done:
                    continue
                common = ["--steps", str(total), "--threads", str(a.threads), "--log-every", "50",
                          "--json"]
                t0 = time.perf_counter()
                if (out / "checkpoint.pt").exists():
                    summ = run(pk + ["train", "--resume", str(out)] + common)
                else:
                    summ = run(pk + ["train", "--data", a.data, "--holdout", "0.2", "--split-seed", "0",
                                     "--model", a.model, "--seed", str(seed), "--out", str(out)]
                               + COMMON + VARIANTS[variant] + common)
                train_s = time.perf_counter() - t0
                model, info = load(out)
                mse = heldout_eps_mse(model, info, held.images)
                x = sample_model(model, info, a.n, a.sample_steps, seed=0)
                q = quality_report(Path(a.classifier) / "classifier.pt", x)
                rec = {"variant": variant, "seed": seed, "step": total, "train_loss": summ["loss"],
                       "s_per_step": summ["s_per_step"], "train_seconds": train_s,
                       "heldout_eps_mse": mse, "fd": q["frechet_distance"],
                       "fd_floor": q["floor"]["frechet_distance"], "precision": q["precision"],
                       "recall": q["recall"], "n": a.n}
                rows.append(rec)
                print(json.dumps(rec), flush=True)
                Path(a.out).mkdir(parents=True, exist_ok=True)
                summary_path.write_text(json.dumps(rows, indent=1))
    plot(rows, Path(a.out) / "curves.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci, v in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        col = colours[ci % len(colours)]
        for si, s in enumerate(sorted({r["seed"] for r in rows if r["variant"] == v})):
            rr = sorted((r for r in rows if r["variant"] == v and r["seed"] == s), key=lambda r: r["step"])
            st = [r["step"] for r in rr]
            lab = v if si == 0 else None
            ls = "-" if si == 0 else ":"
            ax[0].plot(st, [r["heldout_eps_mse"] for r in rr], "o" + ls, color=col, label=lab)
            ax[1].plot(st, [r["fd"] for r in rr], "o" + ls, color=col, label=lab)
            ax[2].plot(st, [r["precision"] for r in rr], "o" + ls, color=col, label=None if lab is None else lab + " precision")
            ax[2].plot(st, [r["recall"] for r in rr], "x" + ls, color=col, alpha=0.6,
                       label=None if lab is None else lab + " recall")
    ax[0].set_title("solid: seed 0, dotted: seed 1", fontsize=8)
    floor = [r["fd_floor"] for r in rows]
    if floor:
        ax[1].axhline(sum(floor) / len(floor), color="k", ls=":", label="real-vs-real floor")
    ax[0].set(xlabel="training step", ylabel="held-out eps-MSE (unweighted)")
    ax[1].set(xlabel="training step", ylabel="classifier-feature Frechet", yscale="log")
    ax[2].set(xlabel="training step", ylabel="precision / recall")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    ax[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
