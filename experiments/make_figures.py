"""Figures and summary numbers for docs/experiments.md from the JSON outputs of the experiment scripts.

    python experiments/make_figures.py --runs runs/exp --figures docs/figures/experiments
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr

XMIN = -8.0


def _load(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def two_regimes(jd: dict, fig_dir: Path) -> dict:
    r = jd["rows"]
    l = np.array([x["logsnr"] for x in r])
    ent = np.array([x["attn_entropy_norm"] for x in r])
    cross = np.array([x["attn_cross_mass"] for x in r])
    mj = np.array([x["Moff_jac"] for x in r])
    ms = np.array(jd["surrogate_Moff"])
    lp = np.maximum(l, XMIN)  # the first trailing level (l ~ -19.8) is drawn at XMIN
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(lp, ent, "o-", label="attention entropy / log P")
    ax[0].plot(lp, cross, "s-", label="cross-patch attention mass 1 - A_ii")
    ax[0].plot(lp, mj, "^-", label="M_off of the DiT Jacobian (measured)")
    ax[0].plot(lp, ms, "k--", label="surrogate M_off(t) (MNIST Fourier spectrum)")
    ax[0].axvline(0, color="grey", lw=0.8)
    ax[0].set(xlabel=f"logSNR of the level (first level, l = {l[0]:.1f}, drawn at {XMIN:g})", ylabel="fraction", ylim=(0, 1.02),
              title=f"DiT, {jd['steps']}-step trailing DDIM chain")
    ax[0].legend(fontsize=7)
    per = np.array([x["attn_cross_mass_per_layer"] for x in r])
    for j in range(per.shape[1]):
        ax[1].plot(lp, per[:, j], "o-", ms=3, label=f"layer {j}")
    ax[1].plot(lp, ms, "k--", label="surrogate M_off")
    ax[1].axvline(0, color="grey", lw=0.8)
    ax[1].set(xlabel="logSNR", ylabel="cross-patch attention mass", ylim=(0, 1.02), title="per layer")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "two_regimes.png", dpi=80)
    plt.close(fig)

    def sp(a, b):
        return float(spearmanr(a, b).statistic)

    lo, hi = l < 0, l >= 0
    return {"spearman_cross_vs_surrogate": sp(cross, ms), "spearman_entropy_vs_surrogate": sp(ent, ms),
            "spearman_jacMoff_vs_surrogate": sp(mj, ms), "spearman_cross_vs_jacMoff": sp(cross, mj),
            "spearman_entropy_vs_jacMoff": sp(ent, mj),
            "mean_below0": {"entropy": float(ent[lo].mean()), "cross": float(cross[lo].mean()),
                            "Moff_jac": float(mj[lo].mean()), "Moff_sur": float(ms[lo].mean())},
            "mean_above0": {"entropy": float(ent[hi].mean()), "cross": float(cross[hi].mean()),
                            "Moff_jac": float(mj[hi].mean()), "Moff_sur": float(ms[hi].mean())},
            "table": [{"step": i, "logsnr": float(l[i]), "entropy_norm": float(ent[i]), "cross": float(cross[i]),
                       "Moff_jac": float(mj[i]), "Moff_sur": float(ms[i])} for i in range(len(l))]}


def budget(jds: dict, fig_dir: Path) -> dict:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    out = {}
    ref = None
    for name, jd in jds.items():
        r = jd["rows"]
        l = np.array([x["logsnr"] for x in r])
        lb = np.array([x["LB"] for x in r])
        ax.plot(np.maximum(l, XMIN), lb, "o-", label=f"L_B(D_t) {name} (step {jd['train_step']})")
        out[name] = {"logsnr": l.tolist(), "LB": lb.tolist(), "lstar": jd["lstar"], "gauss": jd["gaussian_LB"],
                     "LB_all": [x["LB_all"] for x in r],
                     "n_above_lstar": int((lb > np.array(jd["lstar"])).sum()),
                     "n_above_gauss": int((lb > np.array(jd["gaussian_LB"])).sum()),
                     "ratio_to_lstar": (lb / np.array(jd["lstar"])).tolist()}
        ref = jd
    l = np.array([x["logsnr"] for x in ref["rows"]])
    l = np.maximum(l, XMIN)
    ax.plot(l, ref["lstar"], "k--", label="L*_t (contraction threshold)")
    ax.plot(l, ref["gaussian_LB"], "k:", label="Gaussian-optimal L_B (stationary MNIST model)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="logSNR of the level", ylabel="block-row sum (p = 4 patches, spectral)", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "jacobian_budget.png", dpi=80)
    plt.close(fig)
    return out


def ky(kd: dict, fig_dir: Path) -> dict:
    num = np.array(kd["numerical"]["exponents"])
    spr = np.array(kd["numerical"]["spread"])
    ana = np.array(kd["analytic_exponents"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    i = np.arange(1, len(num) + 1)
    ax[0].plot(i, num, "-", label=f"DiT numerical (top {len(num)}, {kd['trajectories']} trajectories)")
    ax[0].fill_between(i, num - spr, num + spr, alpha=0.3)
    ax[0].plot(np.arange(1, len(ana) + 1), ana, "k--", label="Gaussian surrogate (MNIST PCA spectrum)")
    ax[0].axhline(0, color="grey", lw=0.8)
    m = min(200, len(num))
    lo, hi = min(num[:m].min(), ana[:m].min()), max(num[:m].max(), ana[:m].max())
    ax[0].set(xlabel="index k", ylabel="finite-time exponent (sum over the chain)", xlim=(0, 200),
              ylim=(lo - 0.5, hi + 0.5))
    ax[0].legend(fontsize=7)
    ax[1].plot(i, np.cumsum(num), "-", label="DiT numerical partial sum")
    ax[1].plot(np.arange(1, len(ana) + 1), np.cumsum(ana), "k--", label="surrogate partial sum")
    ax[1].axhline(0, color="grey", lw=0.8)
    ps, pa = np.cumsum(num)[:m], np.cumsum(ana)[:m]
    ax[1].set(xlabel="k", ylabel="sum of the top k exponents", xlim=(0, 200),
              ylim=(min(ps.min(), pa.min()) - 5, max(ps.max(), pa.max()) + 5))
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "kaplan_yorke.png", dpi=80)
    plt.close(fig)
    return {"numerical_ky": kd["numerical"]["kaplan_yorke"], "numerical_ky_spread": kd["numerical"]["kaplan_yorke_spread"],
            "lower_bound": kd["numerical"]["kaplan_yorke_is_lower_bound"], "analytic_ky": kd["analytic_kaplan_yorke"],
            "num_pos": kd["numerical_n_positive"], "ana_pos": kd["analytic_n_positive"],
            "num_top5": num[:5].tolist(), "ana_top5": ana[:5].tolist(), "k": kd["k"], "seconds": kd["seconds"]}


def loss_curve(log: Path, fig_dir: Path, name: str) -> None:
    rows = [json.loads(s) for s in log.read_text().splitlines()]
    rows = [r for r in rows if r.get("event") == "step"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    st = np.array([r["step"] for r in rows])
    lo = np.array([r["loss_mse"] for r in rows])
    ax.plot(st, lo, "-", lw=0.8)
    ax.set(xlabel="step", ylabel="training eps-MSE (batch of 64)", yscale="log", title=name)
    fig.tight_layout()
    fig.savefig(fig_dir / f"{name}_loss.png", dpi=80)
    plt.close(fig)


def _steps(log: Path) -> list[dict]:
    return [r for r in (json.loads(s) for s in log.read_text().splitlines()) if r.get("event") == "step"]


def reg_curves(runs: Path, fig_dir: Path) -> None:
    """Training eps/v-MSE with and without the PIFS regulariser (same seed: same batches and noise)."""
    pairs = [("eps", runs / "ablation" / "uniform-s0" / "log.jsonl", runs / "reg_w0.1_killed" / "log.jsonl"),
             ("v", runs / "ablation" / "v-s0" / "log.jsonl",
              runs / "ablation_reg" / "v+reg-s0" / "log.jsonl" if (runs / "ablation_reg" / "summary.json").exists()
              else runs / "vreg_killed" / "log.jsonl")]
    pairs = [p for p in pairs if p[1].exists() and p[2].exists()]
    if not pairs:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, off, on in pairs:
        a, b = _steps(off), _steps(on)
        ax[0].plot([r["step"] for r in a], [r["loss_mse"] for r in a], "o-", ms=3, label=f"{name}, no regulariser")
        ax[0].plot([r["step"] for r in b], [r["loss_mse"] for r in b], "x--", label=f"{name}, --reg-weight 0.1")
        ax[1].plot([r["step"] for r in b], [max(r["reg"], 1e-3) for r in b], "x--", label=f"{name}: R (unweighted)")
    ax[0].set(xlabel="step", ylabel="training MSE of the prediction (batch 64)", yscale="log", xlim=(0, 520))
    ax[1].set(xlabel="step", ylabel="regulariser value R", yscale="log", xlim=(0, 520))
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "regularizer_curves.png", dpi=80)
    plt.close(fig)


def tables(S: dict) -> str:
    out = []
    if "two_regimes" in S:
        t = S["two_regimes"]
        out.append("| step | logSNR | attn entropy / log P | cross-patch attn mass | M_off Jacobian (DiT) | M_off surrogate |")
        out.append("|---|---|---|---|---|---|")
        for r in t["table"]:
            out.append(f"| {r['step']} | {r['logsnr']:.2f} | {r['entropy_norm']:.3f} | {r['cross']:.3f} | "
                       f"{r['Moff_jac']:.3g} | {r['Moff_sur']:.3f} |")
        out.append("")
        out.append("Spearman over steps: " + ", ".join(f"{k[9:]} = {v:.2f}" for k, v in t.items()
                                                     if k.startswith("spearman")))
        out.append("")
    if "budget" in S:
        names = list(S["budget"])
        b0 = S["budget"][names[0]]
        out.append("| step | logSNR | L*_t | Gaussian-optimal L_B | " + " | ".join(f"L_B {n}" for n in names) + " |")
        out.append("|---|---|---|---|" + "---|" * len(names))
        for i, l in enumerate(b0["logsnr"]):
            out.append(f"| {i} | {l:.2f} | {b0['lstar'][i]:.3f} | {b0['gauss'][i]:.3f} | "
                       + " | ".join(f"{S['budget'][n]['LB'][i]:.3g}" for n in names) + " |")
        out.append("")
        for n in names:
            out.append(f"{n}: L_B > L* at {S['budget'][n]['n_above_lstar']} of {len(b0['logsnr'])} steps, "
                       f"> Gaussian-optimal L_B at {S['budget'][n]['n_above_gauss']}")
        out.append("")
    if "ablation" in S:
        out.append("| variant | seed | step | train loss (own weighting) | held-out eps-MSE (unweighted) | Frechet | floor | precision | recall | s/step |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in S["ablation"]:
            out.append(f"| {r['variant']} | {r['seed']} | {r['step']} | {r['train_loss']:.4f} | {r['heldout_eps_mse']:.4f} | "
                       f"{r['fd']:.1f} | {r['fd_floor']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['s_per_step']:.3f} |")
        out.append("")
        groups: dict = {}
        for r in S["ablation"]:
            groups.setdefault((r["variant"], r["step"]), []).append(r)
        out.append("| variant | step | seeds | held-out eps-MSE mean (range) | Frechet mean (range) | precision mean | recall mean |")
        out.append("|---|---|---|---|---|---|---|")
        for (v, st), rr in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            m = np.array([r["heldout_eps_mse"] for r in rr])
            f = np.array([r["fd"] for r in rr])
            out.append(f"| {v} | {st} | {len(rr)} | {m.mean():.4f} ({m.min():.4f}–{m.max():.4f}) | "
                       f"{f.mean():.1f} ({f.min():.1f}–{f.max():.1f}) | "
                       f"{np.mean([r['precision'] for r in rr]):.3f} | {np.mean([r['recall'] for r in rr]):.3f} |")
        out.append("")
    if "ky" in S:
        out.append("```\n" + json.dumps(S["ky"], indent=1) + "\n```")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="runs/exp")
    p.add_argument("--figures", default="docs/figures/experiments")
    a = p.parse_args()
    runs, fig_dir = Path(a.runs), Path(a.figures)
    fig_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    jd = _load(runs / "jac_dit.json")
    if jd:
        summary["two_regimes"] = two_regimes(jd, fig_dir)
    jds = {n: _load(runs / f"jac_{n}.json") for n in ("dit", "unet")}
    jds = {k: v for k, v in jds.items() if v}
    if jds:
        summary["budget"] = budget(jds, fig_dir)
    kd = _load(runs / "ky_dit_full.json") or _load(runs / "ky_dit.json")
    if kd:
        summary["ky"] = ky(kd, fig_dir)
    for n in ("dit", "unet"):
        if (runs / n / "log.jsonl").exists():
            loss_curve(runs / n / "log.jsonl", fig_dir, n)
    abl_rows = (_load(runs / "ablation" / "summary.json") or []) + (_load(runs / "ablation_reg" / "summary.json")
                                                                    or [])
    if abl_rows:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from weighting_regularizer import plot as plot_ablation

        plot_ablation(abl_rows, fig_dir / "ablation_curves.png")
    reg_curves(runs, fig_dir)
    abl = (_load(runs / "ablation" / "summary.json") or []) + (_load(runs / "ablation_reg" / "summary.json") or [])
    if abl:
        summary["ablation"] = abl
    (runs / "figures_summary.json").write_text(json.dumps(summary, indent=1))
    (runs / "tables.md").write_text(tables(summary))
    print(json.dumps(summary, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
