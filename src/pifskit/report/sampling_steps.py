"""The geometry report's sampling-steps section: the model-free step design for the analysed schedule, solver and
number of steps, beside every common list and the analysed chain itself, all scored by the same closed-form
metric (:func:`pifskit.design.steps.optimal_steps`; docs/design.md).

Rows: ``pifskit`` (the design), then the baselines sorted by the design's metric; the analysed chain is marked
(``this_chain``) where it equals a baseline, else added as a row (its name) when it lands at sigma = 0.
"""

from __future__ import annotations

import html
import json

import numpy as np
from matplotlib.ticker import MaxNLocator

from .._json import to_jsonable
from ..chains import Chain
from ..design.baselines import baseline_levels
from ..design.steps import optimal_steps
from ..schedules import Schedule
from ..spectra import Spectrum
from .html import cell
from .page import finish_axes, new_figure, render_png

KEY = "sampling_steps"
#: a list this close (max |log sigma| difference) to the analysed chain is the analysed chain
_SAME = 1e-9


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same levels: equal size, the same pure-noise / clean ends, log sigma within ``_SAME`` elsewhere."""
    if a.size != b.size:
        return False
    with np.errstate(divide="ignore"):
        return bool(np.allclose(np.log(a), np.log(b), rtol=0, atol=_SAME))  # +-inf: equal only to themselves


def sampling_steps_data(schedule: Schedule, chain: Chain, spectrum: Spectrum, solver: str = "ddim",
                        extra_baselines: dict | None = None) -> dict:
    """The section's data: the design (:func:`optimal_steps` with N = the chain's steps, the solver's default
    start) and one row per list {name, sigmas, timesteps (design only), w2, sw2, w2_ratio = w2 / design's w2,
    this_chain}; the chain is scored as an extra baseline when it is none of them and lands at 0."""
    N = chain.n_steps
    mine = np.asarray(chain.sigmas, dtype=float)
    extra = dict(extra_baselines or {})
    common = {**baseline_levels(schedule, N), **extra}  # the lists optimal_steps scores (cheap to list)
    if chain.lands_clean and not any(_same(mine, np.asarray(lv, float)) for lv in common.values()):
        name = chain.name if chain.name and chain.name not in common and chain.name != "pifskit" else "this chain"
        extra[name] = mine  # its own row, scored in the same optimisation
    d = optimal_steps(schedule, spectrum, N, solver=solver, extra_baselines=extra)
    rows = [{"name": "pifskit", "sigmas": d.sigmas, "timesteps": d.timesteps, "w2": d.w2, "sw2": d.sw2}]
    rows += [{"name": k, "sigmas": np.asarray(b["sigmas"], float), "timesteps": None, "w2": b["w2"], "sw2": b["sw2"]}
             for k, b in sorted(d.baselines.items(), key=lambda kv: kv[1][d.metric])]
    for r in rows:
        r["w2_ratio"] = float(r["w2"] / d.w2) if d.w2 > 0 else None
        r["this_chain"] = _same(mine, r["sigmas"])
    return {"solver": d.solver, "start": d.start, "metric": d.metric, "n_steps": N, "spectrum": spectrum.name,
            "source": d.meta.get("source", "optimiser"), "iterations": d.iterations, "converged": d.converged,
            "sw2_mc_se": d.sw2_se, "flow_sigmas": d.flow_sigmas,
            "flow_sigmas_unshifted": d.flow_sigmas_unshifted, "flow_shift": d.flow_shift, "rows": rows}


def _levels_text(sig: np.ndarray, limit: int = 8) -> str:
    def f(s: float) -> str:
        return "\u221e" if np.isinf(s) else f"{s:.3g}"

    vals = [f(s) for s in sig]
    return ", ".join(vals if len(vals) <= limit else vals[: limit - 3] + ["\u2026"] + vals[-2:])


def _table(data: dict) -> str:
    sec = data[KEY]
    head = "".join(f"<th>{h}</th>"
                   for h in ("list", "W2", "sliced W2", "W2 / pifskit", "sigmas (noisy levels, then 0)"))
    body = []
    for i, r in enumerate(sec["rows"]):
        name = html.escape(r["name"]) + (" (this chain)" if r["this_chain"] else "")
        cls = ' style="font-weight:bold"' if i == 0 else ""
        cells = "".join(cell(data, f"{KEY}.rows[{i}].{k}") for k in ("w2", "sw2", "w2_ratio"))
        sig = np.array([np.inf if s == "inf" else s for s in r["sigmas"]], dtype=float)
        body.append(f"<tr{cls}><td>{name}</td>{cells}<td>{html.escape(_levels_text(sig))}</td></tr>")
    return f'<table class="steps"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


#: line colours of the common lists (no blue or red: those mark the design and the analysed chain)
_PALETTE = ("#2a9d5c", "#8a5a9e", "#e69f00", "#56b4e9", "#cc79a7", "#7f7f7f", "#bcbd22", "#17becf", "#8c564b",
            "#333333", "#f0c05a", "#5b6f8a")


def _figure(sec: dict) -> bytes:
    rows = sec["rows"]
    fig, (ax1, ax2) = new_figure((10.0, 4.4), ncols=2)
    for i, r in enumerate(rows):
        sig = np.asarray(r["sigmas"], float)[:-1]
        k = np.arange(sig.size)
        ok = np.isfinite(sig)
        style = dict(lw=2.6, color="#1f4e9c", zorder=5, marker="o", ms=4) if i == 0 else \
            dict(lw=1.1, color=_PALETTE[(i - 1) % len(_PALETTE)])
        if r["this_chain"] and i > 0:
            style.update(ls="--", color="#c0392b", lw=1.8, zorder=4)
        ax1.plot(k[ok], sig[ok], label=r["name"] + (" (this chain)" if r["this_chain"] else ""), **style)
    ax1.set_yscale("log")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_axes(ax1, r"noise level $\sigma$ (VE)", f"Levels of each {sec['n_steps']}-step list",
                xlabel="level index (0 = first; the last step goes to 0)", grid={"which": "both", "lw": 0.5},
                legend=dict(fontsize=6.5, ncol=2, loc="lower left"))
    names = [r["name"] for r in rows][::-1]
    w2 = np.array([r["w2"] for r in rows], dtype=float)[::-1]
    colours = ["#c0392b" if r["this_chain"] else "#9aa5b1" for r in rows][::-1]
    colours[-1] = "#1f4e9c"
    y = np.arange(len(rows))
    ax2.barh(y, w2, color=colours)
    for yi, v in zip(y, w2):
        ax2.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
    ax2.set_yticks(y, names, fontsize=7)
    ax2.set_xlim(0, 1.15 * w2.max())
    finish_axes(ax2, "", f"W2 of the {sec['solver']} output law (Gaussian model)",
                xlabel="W2 to the data Gaussian (lower is better)", grid={"axis": "x"})
    return render_png(fig)


def sampling_steps_section(schedule: Schedule, chain: Chain, spectrum: Spectrum, solver: str = "ddim",
                           extra_baselines: dict | None = None) -> dict:
    """The report section (``build_report``'s ``extra_sections`` entry): key ``sampling_steps``, the table, one
    figure (the levels of every list and their W2)."""
    sec = json.loads(json.dumps(to_jsonable(sampling_steps_data(schedule, chain, spectrum, solver, extra_baselines)),
                                allow_nan=False))  # as report.json will hold it: the table shows those numbers
    first = sec["rows"][0]
    timesteps = "" if first["timesteps"] is None else (
        f" Integer timesteps of the design: <code>{html.escape(', '.join(str(t) for t in first['timesteps']))}</code>.")
    flow = "" if sec["flow_sigmas_unshifted"] is None else (
        " For diffusers' FlowMatchEulerDiscreteScheduler hand <code>set_timesteps(sigmas=...)</code> the unshifted "
        f"values <code>{html.escape(_levels_text(np.asarray(sec['flow_sigmas_unshifted'], float), 12))}</code> "
        f"(it applies its shift {sec['flow_shift']:.4g} on top).")
    best = next((r for r in sec["rows"][1:] if not r["this_chain"]), None)
    mine = next((r for r in sec["rows"][1:] if r["this_chain"]), None)
    versus = "".join(f" Its W2 is {100 * (1 - 1 / r['w2_ratio']):.1f} % below {what} ({html.escape(r['name'])})."
                     for r, what in ((best, "the best common list"), (mine, "the analysed chain's"))
                     if r is not None and r["w2_ratio"])
    if not sec["converged"]:
        versus += f" The optimiser stopped before converging ({sec['iterations']} L-BFGS-B iterations)."
    mc = "" if sec["sw2_mc_se"] is None else f" (its Monte-Carlo error {sec['sw2_mc_se']:.1e}, fixed projections)"
    if mine is None:
        versus += " The analysed chain does not land at sigma = 0, so it is not scored."
    intro = (f"<p>Sampling steps for this schedule with <b>{html.escape(sec['solver'])}</b> at {sec['n_steps']} steps: "
             "the levels pifskit designs (model-free: the closed-form output law of the solver on the Gaussian of "
             f"the spectrum <code>{html.escape(sec['spectrum'])}</code>, started from the sampler's N(0, I) "
             f"({html.escape(sec['start'])})), beside the common lists, every one scored by the same W2 and its "
             f"sliced form{mc}.{versus} These are predictions of the Gaussian model, not measurements on a network; "
             "on trained "
             "models and exact mixtures docs/benchmarks.md measures them, and <code>pifskit design steps --model "
             "CHECKPOINT</code> designs from the model's own trajectories. <code>pifskit design steps --json</code> "
             f"gives the same lists for diffusers' <code>sigmas=</code> / <code>timesteps=</code>.{timesteps}{flow}"
             "</p>")
    return {"key": KEY, "title": "Sampling steps: designed vs common lists", "data": sec,
            "html": intro + _table({KEY: sec}),
            "figures": [{"key": "levels", "title": "Sampling levels and their W2",
                         "caption": "Left: the noise level of each list's steps (log scale; the designed list in "
                                    "blue, the analysed chain dashed red; a first level at pure noise is not "
                                    "drawn). Right: each list's W2 under the Gaussian model (lower is better): "
                                    "look at how far the analysed chain is from the designed list.",
                         "png": _figure(sec)}]}
