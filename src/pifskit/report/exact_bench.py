"""The sampling-benchmark page (:func:`write_bench_report`): report.json, report.html, results.md (the markdown
tables) and ``error_vs_nfe_<metric>.png`` (a panel per sampler, a line per schedule, 95% CIs, the floor dashed)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from .html import fmt_number
from .page import new_figure, render_png, write_file, write_page

_CAPTIONS = {
    "w2": "Closed-form W2 distance between the sampler's output Gaussian and the data Gaussian.",
    "kl": "Closed-form KL(sampler || data) of the output Gaussian.",
    "sw2": "Sliced W2 to fresh true samples (random unit projections), 95% bootstrap CI.",
    "mmd2": "Unbiased MMD^2 (Gaussian kernel, median bandwidth) to fresh true samples, 95% bootstrap CI.",
    "mode_tv": "Total variation between the posterior mass per mixture component and the true weights, 95% CI.",
}


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<i>\1</i>", t)


def markdown_html(md: str) -> str:
    """HTML of the benchmark's markdown: blocks separated by blank lines -- ``## `` headings, paragraphs, pipe
    tables -- with **bold** and *italic*; level-1 headings are dropped (the page has its own)."""
    out = []
    for block in md.split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or lines[0].startswith("# "):
            continue
        if lines[0].startswith("## "):
            out.append(f"<h3>{_inline(lines[0][3:])}</h3>")
        elif lines[0].startswith("|"):
            rows = [[c.strip() for c in r.strip("|").split("|")] for r in lines if not re.match(r"^\|[-|]+\|$", r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f'<td{" class=num" if j > 1 else ""}>{_inline(c)}</td>'
                                            for j, c in enumerate(r)) + "</tr>" for r in rows[1:])
            out.append(f'<table class="steps"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def error_vs_nfe_figure(report: dict, metric: str):
    """Error vs NFE of one metric: a panel per sampler, a line per schedule, CI bars, floor dashed."""
    res = [r for r in report["results"] if r["metric"] == metric]
    floor = {f["metric"]: f for f in report.get("floor", [])}
    samplers = list(dict.fromkeys(r["sampler"] for r in res))
    fig, axes = new_figure((4.2 * len(samplers), 3.8), ncols=len(samplers), squeeze=False, sharey=True)
    for ax, smp in zip(axes[0], samplers):
        for sc in dict.fromkeys(r["schedule"] for r in res):
            rows = sorted((r for r in res if r["sampler"] == smp and r["schedule"] == sc), key=lambda r: r["nfe"])
            if not rows:
                continue
            x = np.array([r["nfe"] for r in rows], dtype=float)
            y, lo, hi = (np.array([float(r[k]) for r in rows]) for k in ("value", "ci_low", "ci_high"))
            ax.errorbar(x, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], marker="o", ms=3,
                        capsize=2, label=sc)
        if metric in floor:
            ax.axhline(float(floor[metric]["value"]), color="k", ls="--", lw=0.8, label="true vs true (floor)")
        ax.set_xscale("log")
        if metric == "mmd2":
            ax.set_yscale("symlog", linthresh=1e-4)
        else:
            ax.set_yscale("log")
        ax.set_title(smp)
        ax.set_xlabel("NFE (denoiser evaluations)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{metric} (lower is better)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(report["data"]["spec"], fontsize=9)
    return fig


def _settings_html(report: dict) -> str:
    rows = [(f"data {k}", v) for k, v in report["data"].items()]
    rows += [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in report["settings"].items()]
    rows += [(f"noise range {k}", v) for k, v in report["noise_range"].items()]
    rows += [(f"timing {k}", v) for k, v in report.get("timing", {}).items()]
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{fmt_number(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def write_bench_report(report: dict, out_dir, markdown: str, plots: bool = True) -> list[Path]:
    """Write report.json, report.html, results.md and (``plots``) the error-vs-NFE PNGs; return the paths."""
    metrics = list(dict.fromkeys(r["metric"] for r in report["results"]))
    figures = []
    if plots:
        for i, m in enumerate(metrics):
            figures.append({"key": m, "label": "abcdefghij"[i % 10], "title": f"{m} against NFE",
                            "caption": _CAPTIONS.get(m, "") + " One panel per sampler, one line per schedule.",
                            "file": f"error_vs_nfe_{m}.png", "png": render_png(error_vs_nfe_figure(report, m))})
    reading = ("<p>Every configuration starts from the same x_T (common random numbers), so differences between "
               "schedules are paired. Read the paired table first: a CI that excludes 0 says which schedule is "
               "better at that step count; overlapping CIs in the per-metric tables do not settle it. Values near "
               "the true-vs-true floor are as good as the finite sample can tell.</p>")
    if report.get("oracle_gap"):
        reading += ("<p>The 'oracle' row holds levels optimised on this bench's own metric for each sampler and step "
                    "count, on a separate optimisation sample; the distance-to-oracle table is the number to drive "
                    "to zero. It is measured on the evaluation sample, so noise can make it negative.</p>")
    sections = [
        {"key": "results", "title": "Results", "html": reading + markdown_html(markdown)},
        {"key": "figures", "title": "Figures", "html": "", "figures": figures},
        {"key": "settings", "title": "Settings", "html": _settings_html},
    ]
    parsed = write_page(out_dir, report, sections, title=f"pifskit bench sampling \u2014 {report['data']['spec']}",
                        heading="Sampling benchmark", subtitle=f"data <b>{html.escape(str(report['data']['spec']))}"
                        f"</b> \u00b7 {report['settings']['samples']} samples per configuration, seed "
                        f"{report['settings']['seed']}",
                        footer="Generated by pifskit bench sampling. The tables are also in <code>results.md</code>, "
                               "all numbers in <code>report.json</code>, the figures as PNG files.")
    out = Path(out_dir)
    write_file(out / "results.md", markdown)
    names = [parsed["files"]["json"], "results.md", parsed["files"]["html"]] + [f["file"] for f in figures]
    return [out / n for n in names]
