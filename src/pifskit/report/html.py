"""Self-contained HTML rendering of the report (plain HTML + CSS, figures as base64 data URIs).

Every number shown is formatted by :func:`fmt_number` from the JSON-ready
report dict (the same object written to ``report.json``); table cells carry
``data-key`` (a path into that dict, e.g. ``summary.lambda_2star`` or
``steps.L_star[3]``) and ``data-value`` (the exact JSON value) so that the
correspondence is machine-checkable.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

__all__ = ["fmt_number", "lookup", "render_sections", "subtitle_html", "KEY_NUMBERS", "FOOTER"]


def fmt_number(v: Any) -> str:
    """Display form of a JSON value: 6 significant digits, inf as the infinity sign, None as a dash."""
    if v is None:
        return "\u2014"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if v == "inf":
        return "\u221e"
    if v == "-inf":
        return "\u2212\u221e"
    if v == "nan":
        return "n/a"
    return html.escape(str(v))


def lookup(data: dict, path: str) -> Any:
    """The value at ``path`` ('a.b', 'a.b[3]') in the report dict."""
    cur: Any = data
    for part in path.split("."):
        if "[" in part:
            name, idx = part[:-1].split("[")
            cur = cur[name][int(idx)]
        else:
            cur = cur[part]
    return cur


def _cell(data: dict, path: str, cls: str = "num") -> str:
    v = lookup(data, path)
    return (f'<td class="{cls}" data-key="{html.escape(path)}" '
            f'data-value="{html.escape(json.dumps(v), quote=True)}">{fmt_number(v)}</td>')


#: (label, path in the report dict, explanation) of the key-numbers table; path None starts a group
KEY_NUMBERS: tuple[tuple[str, str | None, str], ...] = (
    ("The chain", None, ""),
    ("Steps N", "summary.n_steps", "denoiser evaluations of the chain"),
    ("Lands on the clean endpoint", "summary.lands_clean", "last step maps to a = 1, s = 0 (c = 0, d = 1, L* = 1)"),
    ("Starts from pure noise", "summary.starts_from_noise", "first level has a = 0"),
    ("\u1fb1 first level", "summary.alpha_bar_first", "alpha_bar of the noisiest level"),
    ("\u1fb1 last level", "summary.alpha_bar_last", "alpha_bar of the cleanest level"),
    ("Contraction and expansion thresholds", None, ""),
    ("L* first step", "summary.L_star_first", "block-Lipschitz budget of the denoiser at the noisiest step"),
    ("L* last step", "summary.L_star_last", "budget at the cleanest step"),
    ("\u03bb* smallest", "summary.lambda_star_min", "smallest per-step expansion threshold (> 1)"),
    ("\u03bb* largest", "summary.lambda_star_max", "largest finite per-step expansion threshold"),
    ("\u03bb** (global expansion threshold)", "summary.lambda_2star",
     "root of \u039b(\u03bb) = 0: the chain expands directions with variance above it (continuum: 1)"),
    ("Regimes and release", None, ""),
    ("Regime boundary step", "summary.regime_boundary_step",
     "first low-noise step: steps before it have mid-level logSNR < 0 (global assembly)"),
    ("Released before the chain", "summary.released_before_chain",
     "directions whose release logSNR lies at or below the first level"),
    ("Never released", "summary.released_never", "directions released only after the last level"),
    ("M_off first step", "summary.M_off_first", "cross-patch Jacobian share at the noisiest step"),
    ("M_off at the boundary step", "summary.M_off_at_boundary", "cross-patch share where logSNR crosses 0"),
    ("M_off last step", "summary.M_off_last", "cross-patch share at the cleanest step"),
    ("Lyapunov spectrum", None, ""),
    ("Kaplan\u2013Yorke dimension", "summary.kaplan_yorke", "root of the discrete Moran equation"),
    ("KY dimension / d", "summary.kaplan_yorke_fraction", "fraction of the data dimension"),
    ("Directions with \u03bb > \u03bb**", "summary.n_above_lambda_2star", "data directions the whole chain expands"),
    ("Positive Lyapunov exponents", "summary.n_positive_exponents",
     "should equal the line above (\u039b increases with \u03bb)"),
    ("Largest exponent", "summary.exponent_max", "log-stretch of the top direction over the chain"),
    ("Smallest exponent", "summary.exponent_min", "log-stretch of the finest direction"),
    ("Sum of exponents", "summary.exponent_sum", "log-volume change of the whole chain"),
    ("Data spectrum", None, ""),
    ("Data dimension d", "summary.d", "number of eigenvalues"),
    ("Mean eigenvalue", "summary.pixel_variance", "per-pixel variance of the data model"),
    ("Largest eigenvalue", "summary.eigenvalue_max", "variance of the top principal direction"),
    ("Smallest eigenvalue", "summary.eigenvalue_min", "variance of the finest direction"),
)

_STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("timestep", "timestep"), ("logsnr_t", "logSNR t"), ("alpha_bar_t", "\u1fb1 t"), ("alpha_bar_s", "\u1fb1 s"),
    ("c", "c"), ("d", "d"), ("L_star", "L*"), ("lambda_star", "\u03bb*"), ("M_off", "M_off"),
    ("released", "released"),
)

def _key_table(data: dict) -> str:
    rows = []
    for label, path, expl in KEY_NUMBERS:
        if path is None:
            rows.append(f'<tr class="group"><th colspan="3">{html.escape(label)}</th></tr>')
            continue
        rows.append(f"<tr><td>{html.escape(label)}</td>{_cell(data, path)}"
                    f'<td class="expl">{html.escape(expl)}</td></tr>')
    return '<table class="kv"><thead><tr><th>quantity</th><th>value</th><th>meaning</th></tr></thead><tbody>' \
           + "".join(rows) + "</tbody></table>"


def _step_rows(n: int, max_rows: int = 80) -> list[int | None]:
    if n <= max_rows:
        return list(range(n))
    half = max_rows // 2
    return list(range(half)) + [None] + list(range(n - half, n))


def _steps_table(data: dict) -> str:
    st = data["steps"]
    cols = [(k, h) for k, h in _STEP_COLUMNS if st.get(k) is not None]
    head = "<tr><th>step</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h in cols) + "</tr>"
    body = []
    for i in _step_rows(len(st["c"])):
        if i is None:
            body.append(f'<tr><td colspan="{len(cols) + 1}">\u2026 (all steps are in report.json)</td></tr>')
            continue
        cls = "high" if st["regime"][i] == "high-noise" else "low"
        body.append(f'<tr class="{cls}"><td>{i}</td>' + "".join(_cell(data, f"steps.{k}[{i}]") for k, _ in cols)
                    + "</tr>")
    legend = ('<p class="legend">Left border: <span style="color:#c08a2b">\u258c</span> high-noise regime '
              '(logSNR &lt; 0 at the step\'s mid-angle), <span style="color:#4f7fbf">\u258c</span> low-noise regime. '
              'Step i maps level t = i to level s = i+1; c, d: F(x) = c x + d D(x); L* = (1 \u2212 c)/d; '
              '\u03bb*: variance above which the step expands; released: data directions whose release logSNR '
              'falls in the step.</p>')
    return legend + f'<table class="steps"><thead>{head}</thead><tbody>' + "".join(body) + "</tbody></table>"


def _inputs_table(data: dict) -> str:
    inp = data["inputs"]
    rows = [("schedule", inp["schedule"]), ("schedule class", inp["schedule_class"]), ("chain", inp["chain"]),
            ("spectrum", inp["spectrum"]), ("patch size (M_off)", inp["patch"]),
            ("pifskit version", data["pifskit_version"])]
    for k, v in (inp.get("spectrum_meta") or {}).items():
        rows.append((f"spectrum {k}", v))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt_number(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def subtitle_html(inp: dict, sm: dict) -> str:
    """The page's subtitle: schedule, chain (steps, landing), spectrum."""
    return (f"schedule <b>{html.escape(str(inp['schedule']))}</b> \u00b7 chain <b>{html.escape(str(inp['chain']))}</b> "
            f"({sm['n_steps']} steps, {'lands' if sm['lands_clean'] else 'does not land'} on the clean endpoint) "
            f"\u00b7 spectrum <b>{html.escape(str(inp['spectrum']))}</b> (d = {sm['d']})")


FOOTER = ("Generated by pifskit {version}. Every number on this page is formatted from <code>report.json</code> "
          "in the same folder (the figures are also saved there as PNG files). Model-free: no denoiser was "
          "evaluated; the geometry follows from the schedule, the chain and the data spectrum (Gaussian surrogate).")


def render_sections(figures: Sequence[dict], extra_sections: Sequence[dict] = ()) -> list[dict]:
    """The geometry report's sections for :func:`pifskit.report.page.write_page`.

    ``figures``: the built-in figures (key, label, title, caption, file, png or note);
    ``extra_sections``: dicts with key, title, html (trusted fragment), optional figures, appended last.
    """
    return [
        {"key": "key-numbers", "title": "Key numbers", "html": _key_table},
        {"key": "figures", "title": "Figures", "html": "", "figures": list(figures)},
        {"key": "steps", "title": "Per-step geometry", "html": _steps_table},
        {"key": "inputs", "title": "Inputs", "html": _inputs_table},
        *({"key": s["key"], "title": s["title"], "html": s["html"], "extra": True,
           "figures": [{"label": s["key"], **f} for f in s.get("figures") or ()]} for s in extra_sections),
    ]
