"""The analyze-model page (:func:`write_model_report`): a denoiser's measured block norms, M_off and Lyapunov
spectrum beside the theory, from :func:`pifskit.torch.analysis.analyze_model`'s dict (nothing here imports torch).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .html import cell, fmt_number, kv_table, plain_table, steps_table
from .page import finish_axes, new_figure, render_png, write_file, write_page

OVERVIEW_PNG = "report.png"
GE = "\u2265"


def ky_text(value: float, lower_bound: bool, spec: str = ".4g") -> str:
    """Kaplan-Yorke dimension for display: '≥ 8' for a lower bound (all top-k partial sums >= 0), else '= 8'."""
    return f"{GE if lower_bound else '='} {format(float(value), spec)}"


def _arr(v) -> np.ndarray:
    return np.asarray(v, dtype=float)


def _panel_block_norms(ax, r: dict) -> None:
    st = r["steps"]
    n = np.arange(len(st["logsnr"]))
    lb = _arr(st["block_max"])
    if np.isfinite(lb).any():
        ax.errorbar(n, lb, yerr=_arr(st["block_max_spread"]), fmt="o-", color="#1f4e9c", capsize=2,
                    label=r"measured $L_B(D_t)$ (spectral block-row sum)")
    ax.plot(n, _arr(st["block_max_frob"]), "s--", color="#6c8ebf", ms=4, label="measured Frobenius block-row sum")
    ax.plot(n, _arr(st["contraction_threshold"]), "k-", lw=2, label=r"$L^*_t$ (contraction threshold)")
    if "surrogate_gaussian_block_max" in st:
        ax.plot(n, _arr(st["surrogate_gaussian_block_max"]), ":", color="#2a9d5c", lw=2,
                label=r"Gaussian-optimal $L_B$ (surrogate)")
    ax.set_yscale("log")
    finish_axes(ax, "block-Lipschitz norm (log scale)", r"Block-max norm of $D_t$ vs $L^*_t$",
                xlabel="step i (0 = noisiest)", grid=dict(which="both"), legend=dict(fontsize=7))


def _panel_offdiag(ax, r: dict) -> None:
    st = r["steps"]
    n = np.arange(len(st["logsnr"]))
    ax.plot(n, _arr(st["offdiag_mass"]), "o-", color="#1f4e9c", label=r"measured $M_{off}$")
    if "surrogate_offdiag_mass" in st:
        ax.plot(n, _arr(st["surrogate_offdiag_mass"]), "--", color="#2a9d5c", label=r"surrogate $M_{off}$")
    b = r["regime_boundary_step"]
    if 0 < b < len(n):
        ax.axvline(b - 0.5, color="#b07a2a", ls=":", label="regime boundary (logSNR = 0)")
    ax.set_ylim(0, 1)
    finish_axes(ax, r"off-diagonal share $M_{off}$ of $\|J\|_F^2$", "Cross-patch share of the Jacobian",
                xlabel="step i (0 = noisiest)", grid={}, legend=dict(fontsize=7))


def _panel_lyapunov(ax, r: dict) -> None:
    num = r["numerical"]
    kk = np.arange(1, num["k"] + 1)
    ax.errorbar(kk, _arr(num["exponents"]), yerr=_arr(num["spread"]), fmt="o-", color="#1f4e9c", capsize=2,
                label=f"numerical (KY {ky_text(num['kaplan_yorke'], num['kaplan_yorke_is_lower_bound'], '.3g')})")
    if "analytic" in r:
        ana = r["analytic"]
        ax.plot(kk, _arr(ana["exponents_top"]), "--", color="#2a9d5c",
                label=f"analytic surrogate (KY = {float(ana['kaplan_yorke']):.3g})")
    ax.axhline(0, color="grey", lw=0.6)
    finish_axes(ax, "Lyapunov exponent (log-stretch over the chain)", "Top-k Lyapunov spectrum",
                xlabel="exponent index i (largest first)", grid={}, legend=dict(fontsize=7))


_FIGURES = (
    ("block_norms", "Block-max norm against the contraction threshold", _panel_block_norms,
     "The step map x -> c_t x + d_t D_t(x) contracts in the block-max norm when the block-row sum L_B(D_t) "
     "lies below L*_t (black). Points above the black line are steps where the denoiser expands across "
     "patches; where the green Gaussian-optimal L_B is also above L*_t the data itself asks for that "
     "expansion, so compare the measured norm with the larger of the two."),
    ("offdiag_mass", "Off-diagonal block mass against the surrogate", _panel_offdiag,
     "The share of the squared Jacobian that couples different patches: expect it high at high noise "
     "(global assembly) and falling through the regime boundary (patch-local detail). A trained model "
     "should follow the green surrogate of the Gaussian-optimal denoiser; a gap at the noisy end means it "
     "assembles global structure differently from the data's second-order statistics."),
    ("lyapunov", "Lyapunov spectrum of the chain", _panel_lyapunov,
     "Finite-time exponents of the whole chain along sampled trajectories (error bars: spread over "
     "trajectories) beside the analytic exponents of the Gaussian surrogate. Positive exponents are "
     "directions the sampler expands; the Kaplan-Yorke dimension is where their partial sums cross zero "
     "(a lower bound, written \u2265, when the top-k sums never do)."),
)


def _figures(r: dict, dpi: int = 110) -> list[dict]:
    out = []
    for i, (key, title, panel, caption) in enumerate(_FIGURES):
        fig, ax = new_figure((7.6, 4.2))
        panel(ax, r)
        out.append({"key": key, "label": "abc"[i], "title": title, "caption": caption,
                    "file": f"{'abc'[i]}_{key}.png", "png": render_png(fig, dpi)})
    return out


def _overview_png(r: dict, dpi: int = 110) -> bytes:
    fig, axes = new_figure((16, 4.4), ncols=3)
    for ax, (_, _, panel, _) in zip(axes, _FIGURES):
        panel(ax, r)
    return render_png(fig, dpi)


def _summary(r: dict) -> dict:
    """Derived key numbers (stored in report.json['summary'])."""
    st = r["steps"]
    spectral = bool(np.isfinite(_arr(st["block_max"])).any())
    lb = _arr(st["block_max"] if spectral else st["block_max_frob"])
    ls = _arr(st["contraction_threshold"])
    floor = np.maximum(ls, _arr(st["surrogate_gaussian_block_max"])) if "surrogate_gaussian_block_max" in st else ls
    over = np.flatnonzero(lb >= ls)
    over_floor = np.flatnonzero(lb > floor)
    num = r["numerical"]
    m = _arr(st["offdiag_mass"])
    return {
        "n_steps": int(len(ls)),
        "block_norm_used": "spectral" if spectral else "frobenius",
        "steps_not_contractive": over.tolist(),
        "steps_above_gaussian_optimal": over_floor.tolist(),
        "max_ratio_to_L_star": float(np.max(lb / ls)),
        "M_off_first": float(m[0]), "M_off_last": float(m[-1]),
        "surrogate_M_off_first": float(st["surrogate_offdiag_mass"][0]) if "surrogate_offdiag_mass" in st else None,
        "surrogate_M_off_last": float(st["surrogate_offdiag_mass"][-1]) if "surrogate_offdiag_mass" in st else None,
        "numerical_kaplan_yorke": float(num["kaplan_yorke"]),
        "numerical_kaplan_yorke_is_lower_bound": bool(num["kaplan_yorke_is_lower_bound"]),
        "analytic_kaplan_yorke": float(r["analytic"]["kaplan_yorke"]) if "analytic" in r else None,
    }


def _steps_list(idx: list[int]) -> str:
    return ", ".join(str(i) for i in idx[:12]) + (" \u2026" if len(idx) > 12 else "")


def _advice(r: dict) -> list[str]:
    sm, num = r["summary"], r["numerical"]
    tips = []
    if sm["steps_not_contractive"]:
        tip = (f"Steps {_steps_list(sm['steps_not_contractive'])} have L_B(D_t) \u2265 L*_t: the step map is not a "
               "block-max contraction there, so the PIFS stability bound does not cover them.")
        if sm["steps_above_gaussian_optimal"]:
            tip += (f" At steps {_steps_list(sm['steps_above_gaussian_optimal'])} the norm also exceeds the "
                    "Gaussian-optimal L_B, i.e. more expansion than the data asks for: train with the PIFS "
                    "regulariser (<code>pifskit train --reg-weight ...</code>) or sample with more steps there.")
        else:
            tip += " The Gaussian-optimal L_B is as large at those steps: the data asks for that expansion."
        tips.append(tip)
    else:
        tips.append("Every step is a block-max contraction (L_B(D_t) < L*_t): the chain is stable in the PIFS sense.")
    if sm["surrogate_M_off_first"] is not None:
        tips.append(f"Cross-patch share at the noisiest step: measured {fmt_number(sm['M_off_first'])}, surrogate "
                    f"{fmt_number(sm['surrogate_M_off_first'])}; at the cleanest: {fmt_number(sm['M_off_last'])} vs "
                    f"{fmt_number(sm['surrogate_M_off_last'])}. Large gaps mean the model couples patches unlike "
                    "the Gaussian-optimal denoiser of the chosen spectrum (check --spectrum matches the data).")
    if num["kaplan_yorke_is_lower_bound"]:
        tips.append(f"All {num['k']} top partial sums of the exponents are non-negative: the numerical Kaplan-Yorke "
                    f"dimension is only a lower bound ({html.escape(ky_text(num['kaplan_yorke'], True))}). Rerun "
                    "with a larger <code>--k</code> to find the crossing.")
    if num.get("trajectories", 2) < 2:
        tips.append("One trajectory: no spread is available; use <code>--trajectories 4</code> or more for error bars.")
    if str(r.get("block_norms_method", "")).startswith("probe"):
        tips.append("Block norms are probe estimates of the Frobenius block-row sum (an upper bound of the spectral "
                    "one); <code>--exact yes</code> gives exact norms for small models.")
    if r.get("analytic_note"):
        tips.append(html.escape(r["analytic_note"]))
    return tips


def _key_table(data: dict) -> str:
    num = data["numerical"]
    ky = ky_text(num["kaplan_yorke"], num["kaplan_yorke_is_lower_bound"])
    ky_row = (f'<tr><td>Numerical KY dimension (top {num["k"]})</td>'
              f'{cell(data, "numerical.kaplan_yorke", html.escape(ky))}'
              f'<td class="expl">\u00b1 {fmt_number(num["kaplan_yorke_spread"])} over trajectories'
              f'{"; lower bound: raise --k" if num["kaplan_yorke_is_lower_bound"] else ""}</td></tr>')
    return kv_table(data, [
        ("Steps N", "summary.n_steps", "denoiser steps analysed"),
        ("Data dimension d", "d", "entries per sample"),
        ("Blocks", "n_blocks", "patches of the block partition"),
        ("Largest L_B / L*", "summary.max_ratio_to_L_star", "above 1: some step is not a block-max contraction"),
        ("M_off first step", "summary.M_off_first", "measured cross-patch share at the noisiest step"),
        ("surrogate M_off first step", "summary.surrogate_M_off_first", "Gaussian-optimal denoiser, same step"),
        ("M_off last step", "summary.M_off_last", "measured cross-patch share at the cleanest step"),
        ("surrogate M_off last step", "summary.surrogate_M_off_last", "Gaussian-optimal denoiser, same step"),
        ("Analytic KY dimension", "summary.analytic_kaplan_yorke", "Gaussian surrogate, all d exponents"),
    ], ky_row)


_STEP_COLUMNS = (("logsnr", "logSNR"), ("contraction_threshold", "L*_t"), ("block_max", "L_B(D_t)"),
                 ("block_max_frob", "Frobenius row sum"), ("surrogate_gaussian_block_max", "Gaussian-optimal L_B"),
                 ("contractive", "contractive"), ("offdiag_mass", "M_off"),
                 ("surrogate_offdiag_mass", "surrogate M_off"))


def _steps_table(data: dict) -> str:
    st = data["steps"]
    legend = ('<p class="legend">Left border: high-noise (amber) / low-noise (blue) regime. L_B(D_t): max over '
              'output patches of the sum of spectral norms of the Jacobian blocks; contractive: L_B &lt; L*_t; '
              'M_off: off-diagonal share of the squared Frobenius norm of the Jacobian.</p>')
    return steps_table(data, [(k, h) for k, h in _STEP_COLUMNS if k in st], range(len(st["logsnr"])),
                       lambda i: i < data["regime_boundary_step"], legend)


def _lyap_table(data: dict) -> str:
    num, ana = data["numerical"], data.get("analytic")
    rows = "".join(f"<tr><td>{i + 1}</td>{cell(data, f'numerical.exponents[{i}]')}"
                   f"{cell(data, f'numerical.spread[{i}]')}"
                   + (cell(data, f"analytic.exponents_top[{i}]") if ana else "<td></td>") + "</tr>"
                   for i in range(num["k"]))
    note = (f"<p>{num['k']} exponents along {num['trajectories']} trajectories (QR-refined frames). Analytic: "
            f"the diagonal Gaussian surrogate of spectrum <code>{html.escape(str(ana['spectrum']))}</code>, KY = "
            f"{fmt_number(ana['kaplan_yorke'])} (top {num['k']} only: {fmt_number(ana['kaplan_yorke_top_k'])}).</p>"
            if ana else f"<p>{num['k']} exponents along {num['trajectories']} trajectories.</p>")
    return (note + '<table class="steps"><thead><tr><th>i</th><th>numerical</th><th>spread</th><th>analytic</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _inputs_table(data: dict) -> str:
    rows = [("chain", data["chain"].get("name")), ("steps", data["chain"].get("n_steps")),
            ("patch", data["patch"]), ("block norms", data["block_norms_method"]), ("dtype", data["dtype"])]
    return plain_table(rows + [(f"model {k}", v) for k, v in data["model"].items()])


def write_model_report(result: dict, out_dir: str | Path) -> dict[str, str]:
    """Write report.json, the figures, report.png (overview) and report.html; return the paths by kind."""
    data = dict(result)
    data["summary"] = _summary(result)
    figures = _figures(result)

    def advice(d: dict) -> str:
        return '<ul class="advice">' + "".join(f"<li>{t}</li>" for t in _advice(d)) + "</ul>"

    sections = [
        {"key": "key-numbers", "title": "Key numbers", "html": _key_table},
        {"key": "advice", "title": "What the numbers say", "html": advice},
        {"key": "figures", "title": "Figures", "html": "", "figures": figures},
        {"key": "steps", "title": "Per step: measured L_B(D_t) beside L*_t, M_off beside the surrogate",
         "html": _steps_table},
        {"key": "lyapunov", "title": "Lyapunov spectrum", "html": _lyap_table},
        {"key": "inputs", "title": "Inputs", "html": _inputs_table},
    ]
    ch = result["chain"]
    sub = (f"chain <b>{html.escape(str(ch.get('name')))}</b> ({ch.get('n_steps')} steps) \u00b7 d = {result['d']}, "
           f"{result['n_blocks']} blocks of patch {result['patch']} \u00b7 block norms: "
           f"{html.escape(str(result['block_norms_method']))} \u00b7 {result['dtype']}")
    parsed = write_page(out_dir, data, sections, title="pifskit analyze-model", heading="PIFS analysis of a denoiser",
                        subtitle=sub,
                        footer="Generated by pifskit analyze-model. Every number on this page is formatted from "
                               "<code>report.json</code> in the same folder; the figures are saved there as PNG "
                               f"files, with the three panels side by side in <code>{OVERVIEW_PNG}</code>.")
    out = Path(out_dir)
    write_file(out / OVERVIEW_PNG, _overview_png(result))
    paths = {"json": out / parsed["files"]["json"], "png": out / OVERVIEW_PNG, "html": out / parsed["files"]["html"]}
    return {k: str(v) for k, v in paths.items()}
