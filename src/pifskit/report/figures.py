"""The report's figures: each function takes :func:`pifskit.report.data.compute_report_data`'s dict and returns a
:class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot); :func:`render_png` makes the PNG bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from .data import DYNAMIC_RANGE
from .page import finish_axes, new_figure, render_png  # noqa: F401  (render_png re-exported)

_HIGH_NOISE = "#f3e6d0"  # shading of the high-noise regime (steps before the boundary)


def _shade_high_noise(ax, boundary: int, n_steps: int) -> None:
    if boundary > 0:
        ax.axvspan(-0.5, boundary - 0.5, color=_HIGH_NOISE, zorder=0, label="high-noise regime (logSNR < 0)")
    if 0 < boundary < n_steps:
        ax.axvline(boundary - 0.5, color="#b07a2a", lw=1.2, ls="--", zorder=1)


def _step_axis(ax, n_steps: int) -> None:
    ax.set_xlim(-0.5, n_steps - 0.5)
    ax.set_xlabel("step i (0 = noisiest; step i maps level i to level i+1)")
    if n_steps <= 25:
        ax.set_xticks(np.arange(n_steps))


def fig_thresholds(data: dict) -> Figure:
    """(a) L*_t, a_t and alpha_bar_t over the chain's steps."""
    st, sm = data["steps"], data["summary"]
    N, b = sm["n_steps"], sm["regime_boundary_step"]
    x = np.arange(N)
    mk = "o" if N <= 60 else None
    fig, ax = new_figure()
    _shade_high_noise(ax, b, N)
    ax.plot(x, st["L_star"], marker=mk, lw=2, color="#1f4e9c", label=r"$L^*_t=(1-c_t)/d_t$ (contraction threshold)")
    ax.plot(x, st["a_t"], marker=mk, ms=4, lw=1.2, ls="--", color="#2a9d5c",
            label=r"$a_t=\sqrt{\bar\alpha_t}$ (continuum limit of $L^*_t$)")
    ax.plot(x, st["alpha_bar_t"], marker=mk, ms=4, lw=1.2, ls=":", color="#8a5a9e", label=r"$\bar\alpha_t$")
    _step_axis(ax, N)
    ax.set_ylim(0, 1.08)
    finish_axes(ax, "value at the step's source level t", r"Per-step contraction threshold $L^*_t$ along the chain",
                grid={}, legend=dict(loc="upper left", fontsize=8))
    return fig


def fig_expansion_map(data: dict) -> Figure:
    """(b) log f_t(lambda) over (step, log10 lambda), the f = 1 contour and lambda*_t."""
    st, sm, fm = data["steps"], data["summary"], data["f_map"]
    N = sm["n_steps"]
    lam = np.asarray(fm["lambda"])
    logf = np.asarray(fm["log_f"], dtype=float)  # (N, K)
    y = np.log10(lam)
    # symmetric colour scale set by the steps before a clean landing (the clean step sends log f -> -inf
    # at lambda -> 0 and would wash out the others); values beyond it saturate
    body = logf[:-1] if (sm["lands_clean"] and N > 1) else logf
    finite = np.abs(body[np.isfinite(body)])
    # long chains: 95th percentile, so a few extreme steps (the first ones) saturate instead of washing out the rest
    top = (np.quantile(finite, 0.95) if N > 30 else finite.max()) if finite.size else 1.0
    vlim = float(min(max(top, 1e-3), 3.0))
    vmin, vmax = -vlim, vlim
    fig, ax = new_figure((7.6, 4.6))
    xe = np.arange(N + 1) - 0.5
    dy = np.diff(y)
    ye = np.concatenate([[y[0] - dy[0] / 2], y[:-1] + dy / 2, [y[-1] + dy[-1] / 2]])
    shown = np.clip(np.where(np.isfinite(logf), logf, vmin), vmin, vmax)
    mesh = ax.pcolormesh(xe, ye, shown.T, cmap="RdBu_r", vmin=vmin, vmax=vmax, shading="flat",
                         rasterized=True)
    cb = fig.colorbar(mesh, ax=ax, extend="both")
    cb.set_label(r"$\log f_t(\lambda)$  (red: expands, blue: contracts)")
    if N >= 2:
        ax.contour(np.arange(N), y, logf.T, levels=[0.0], colors="k", linewidths=1.5)
    ax.plot([], [], color="k", lw=1.5, label=r"$f_t(\lambda)=1$")
    ls = np.asarray(st["lambda_star"], dtype=float)
    ok = np.isfinite(ls)
    ax.plot(np.arange(N)[ok], np.log10(ls[ok]), "o", color="#ffd23f", mec="k", ms=5 if N <= 60 else 2,
            label=r"$\lambda^*_t$ (per-step expansion threshold)")
    for v, name in ((sm["eigenvalue_max"], r"$\lambda_{\max}$ of data"),
                    (sm["eigenvalue_min"], r"$\lambda_{\min}$ of data")):
        if v > 0:
            ax.axhline(math.log10(v), color="#444", lw=1, ls="--")
            ax.text(N - 0.55, math.log10(v), name, ha="right", va="bottom", fontsize=8, color="#222",
                    bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.0})
    _step_axis(ax, N)
    ax.set_ylim(ye[0], ye[-1])
    finish_axes(ax, r"$\log_{10}\lambda$ (direction variance)",
                r"Diagonal expansion function $f_t(\lambda)$ of each step", legend=dict(loc="lower left", fontsize=8))
    return fig


def fig_chain_exponent(data: dict) -> Figure:
    """(c) Lambda(lambda) = sum_t log f_t(lambda) with its root lambda**."""
    cu, sm = data["curves"], data["summary"]
    lam = np.asarray(cu["lambda"])
    fig, ax = new_figure()
    ax.axvspan(sm["eigenvalue_min"], sm["eigenvalue_max"], color="#e8eef7", zorder=0, label="data spectrum range")
    ax.semilogx(lam, cu["Lambda"], lw=2, color="#1f4e9c", label=r"$\Lambda(\lambda)=\sum_t\log f_t(\lambda)$")
    ax.semilogx(lam, cu["continuum_Lambda"], lw=1, ls="--", color="#777",
                label=r"continuum limit $\frac{1}{2}\log\lambda$")
    ax.axhline(0, color="k", lw=0.8)
    l2 = sm["lambda_2star"]
    if math.isfinite(l2):
        ax.axvline(l2, color="#c0392b", lw=1.2, ls=":")
        ax.plot([l2], [0], "o", color="#c0392b", ms=7, label=rf"$\lambda^{{**}}={l2:.4g}$")
    Lam = np.asarray(cu["Lambda"], dtype=float)
    fin = Lam[np.isfinite(Lam)]
    if fin.size:
        pad = 0.05 * (fin.max() - fin.min() + 1e-12)
        ax.set_ylim(fin.min() - pad, fin.max() + pad)
    ax.set_xlim(lam[0], lam[-1])
    finish_axes(ax, r"chain exponent $\Lambda(\lambda)$ (log of total stretch)",
                r"Whole-chain exponent $\Lambda(\lambda)$ and global threshold $\lambda^{**}$",
                xlabel=r"direction variance $\lambda$", grid=dict(which="both", lw=0.5),
                legend=dict(loc="upper left", fontsize=8))
    return fig


def fig_release_map(data: dict) -> Figure:
    """(d) release logSNR -log(lambda_k) of the data's directions against the chain's levels."""
    sp, sm, ch = data["spectrum"], data["summary"], data["chain"]
    counts = np.asarray(sp["multiplicity"])
    rel = np.asarray(sp["release_logsnr"], dtype=float)
    first_rank = np.cumsum(counts) - counts + 1
    ranks = np.concatenate([first_rank, [sm["d"]]])
    rel_ext = np.concatenate([rel, [rel[-1]]])
    levels = np.asarray(ch["logsnr"], dtype=float)
    fl = levels[np.isfinite(levels)]
    N, b = sm["n_steps"], sm["regime_boundary_step"]
    fig, ax = new_figure((7.6, 4.6))
    rel_cap = -math.log(sm["eigenvalue_max"] * DYNAMIC_RANGE)  # release logSNR of the smallest shown eigenvalue
    finite_rel = rel_ext[np.isfinite(rel_ext)]
    ymin = min(fl.min(), finite_rel.min()) - 1.0
    ymax = max(fl.max(), min(finite_rel.max(), rel_cap)) + 1.0
    ax.axhspan(ymin, 0.0, color=_HIGH_NOISE, zorder=0, label="high-noise regime (logSNR < 0)")
    every = max(1, math.ceil((N + 1) / 30))  # long chains: draw every k-th level so the lines stay distinct
    drawn = [i for i in range(0, N + 1, every) if np.isfinite(levels[i])]
    for i in drawn:
        ax.axhline(levels[i], color="#9aa7b8", lw=0.7, zorder=1)
    last_y = -np.inf
    for i in drawn:
        lv = levels[i]
        # label the levels that have room (at least 3.5 % of the axis height from the previous label)
        if (lv - last_y) / (ymax - ymin) >= 0.035:
            ax.text(1.01, lv, f"level {i}", transform=ax.get_yaxis_transform(), fontsize=7, va="center",
                    color="#555")
            last_y = lv
    ax.plot([], [], color="#9aa7b8", lw=0.7,
            label="chain levels (logSNR)" if every == 1 else f"chain levels (logSNR), one line per {every} levels")
    ax.axhline(0.0, color="#b07a2a", lw=1.6, ls="--",
               label=f"regime boundary l = 0 (first low-noise step: {b})")
    ax.step(ranks, rel_ext, where="post", color="#1f4e9c", lw=2,
            label=r"release logSNR $-\log\lambda_k$ of the data")
    ax.set_xscale("log")
    ax.set_xlim(1, max(sm["d"], 2))
    ax.set_ylim(ymin, ymax)
    finish_axes(ax, "logSNR", "Release map: where the chain releases each data direction",
                xlabel=r"direction rank k (1 = largest variance)", legend=dict(loc="upper left", fontsize=8))
    return fig


def fig_block_mass(data: dict) -> Figure | None:
    """(e) surrogate off-diagonal block mass M_off at each step's source level (None without a power grid)."""
    bm, sm = data["block_mass"], data["summary"]
    if not bm["available"]:
        return None
    N, b = sm["n_steps"], sm["regime_boundary_step"]
    fig, ax = new_figure()
    _shade_high_noise(ax, b, N)
    ax.plot(np.arange(N), bm["M_off"], marker="o" if N <= 60 else None, lw=2, color="#c0392b",
            label=rf"$M_{{\rm off}}(t)$, {bm['patch']}x{bm['patch']} patches ({bm['n_patches']} per channel)")
    _step_axis(ax, N)
    ax.set_ylim(0, 1.02)
    finish_axes(ax, "off-diagonal share of Jacobian mass", r"Surrogate cross-patch Jacobian mass $M_{\rm off}(t)$",
                grid={}, legend=dict(loc="upper right", fontsize=8))
    return fig


def fig_lyapunov(data: dict) -> Figure:
    """(f) the analytic Lyapunov spectrum and the Moran function, with the Kaplan-Yorke dimension."""
    ly, sm = data["lyapunov"], data["summary"]
    ex = np.asarray(ly["exponents"], dtype=float)
    k = np.arange(1, ex.size + 1)
    ky = sm["kaplan_yorke"]
    fig, (ax1, ax2) = new_figure((9.4, 4.0), ncols=2)
    ax1.plot(k, ex, lw=2, color="#1f4e9c", drawstyle="steps-mid")
    sp = data["spectrum"]
    ev = np.repeat(np.asarray(sp["eigenvalues_distinct"], dtype=float), np.asarray(sp["multiplicity"]))
    on_scale = ex[(ev >= sm["eigenvalue_max"] * DYNAMIC_RANGE) & np.isfinite(ex)]
    if on_scale.size and on_scale.size < ex.size:  # numerically-zero directions: keep them off scale
        span = on_scale.max() - on_scale.min() + 1e-12
        ax1.set_ylim(on_scale.min() - 0.08 * span, on_scale.max() + 0.08 * span)
        ax1.text(0.02, 0.03, f"{ex.size - on_scale.size} directions with \u03bb < {DYNAMIC_RANGE:g} \u03bb_max "
                 "off scale", transform=ax1.transAxes, fontsize=7, color="#555")

    ax1.axhline(0, color="k", lw=0.8)
    ax1.set_xscale("log")
    finish_axes(ax1, r"$\Lambda_i=\sum_t \log f_t(\lambda_i)$", "Lyapunov spectrum of the chain",
                xlabel="exponent index i (descending)")
    ps = np.concatenate([[0.0], np.cumsum(ex)])
    # zoom on the root: the partial sums fall steeply past it and would hide the hump
    xmax = int(min(ex.size, max(math.ceil(2.5 * ky), 10)))
    D = np.arange(xmax + 1)
    ax2.plot(D, ps[: xmax + 1], lw=2, color="#2a9d5c", label=r"Moran function $P(D)$")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xlim(0, xmax)
    finish_axes(ax2, r"$P(D)=\sum_{i\leq D}\Lambda_i$ (linear between integers)",
                "Kaplan-Yorke dimension: the root of P(D)", xlabel=f"D (zoomed to [0, {xmax}] of d = {sm['d']})")
    if ky > 0:
        ax1.axvline(ky, color="#c0392b", lw=1.2, ls=":", label=rf"$D_{{KY}}={ky:.4g}$")
    ax2.axvline(ky, color="#c0392b", lw=1.2, ls=":")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both", lw=0.5)
    ax2.plot([ky], [0], "o", color="#c0392b", ms=7, label=rf"$D_{{KY}}={ky:.4g}$ of d = {sm['d']}")
    ax2.legend(loc="lower left", fontsize=8, framealpha=0.9)
    if ky > 0:
        ax1.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax1.set_xlim(1, max(ex.size, 2))
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """One report figure: file stem, title, caption (what to look at) and drawing function."""

    key: str
    title: str
    caption: str
    draw: Callable[[dict], Figure | None]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("thresholds", "Contraction threshold over the chain",
               "The denoiser may have a block-Lipschitz constant up to L*\u209c at step t without breaking the PIFS "
               "contraction: look at how small this budget is at the noisy start, how it tracks "
               "a\u209c = \u221a\u1fb1\u209c, and that it reaches 1 on a final step to the clean endpoint.",
               fig_thresholds),
    FigureSpec("expansion_map", "Expansion function map",
               "Each column is one DDIM step acting on a direction of variance \u03bb: red expands, blue "
               "contracts; the black f = 1 contour passes through the yellow \u03bb*\u209c markers, so "
               "directions above it grow in that step and directions below are suppressed as noise.",
               fig_expansion_map),
    FigureSpec("chain_exponent", "Whole-chain exponent",
               "\u039b(\u03bb) sums the per-step log-stretches; its zero \u03bb** separates the directions the "
               "whole chain expands from those it contracts, and how far \u03bb** lies above the continuum "
               "value 1 measures the coarse chain's loss of contrast.",
               fig_chain_exponent),
    FigureSpec("release_map", "Release map of the data spectrum",
               "Each data direction is released (the denoiser starts to keep it) at logSNR \u2212log \u03bb\u2096: "
               "look at which steps release which ranks, how many directions fall in the high-noise regime "
               "below the dashed l = 0 boundary, and whether the chain's first level is already past the "
               "largest directions' release.",
               fig_release_map),
    FigureSpec("block_mass", "Surrogate off-diagonal block mass",
               "The share of the Gaussian-optimal denoiser's Jacobian that couples different patches: expect "
               "it high at high noise (global assembly) and falling through the regime boundary (patch-local "
               "detail); attention entropy of a trained model should follow it.",
               fig_block_mass),
    FigureSpec("lyapunov", "Lyapunov spectrum and Kaplan-Yorke dimension",
               "Left: the finite-time exponents of the whole chain, one per data direction (positive = "
               "expanded); right: their partial sums, whose zero is the Kaplan-Yorke dimension of the "
               "chain's attractor, marked in red.",
               fig_lyapunov),
)
