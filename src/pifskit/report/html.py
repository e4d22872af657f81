"""HTML fragments of the reports: every number is formatted by :func:`fmt_number` from the JSON-parsed report
dict; a table cell carries ``data-key`` (a path into that dict, e.g. ``steps.L_star[3]``) and ``data-value``
(the exact JSON value), so the page and ``report.json`` can be checked against each other.
"""

from __future__ import annotations

import html
import json
from typing import Any, Callable, Sequence


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


def cell(data: dict, path: str, text: str | None = None) -> str:
    """``<td>`` of the value at ``path``, shown as ``text`` (default: :func:`fmt_number` of the value)."""
    v = lookup(data, path)
    return (f'<td class="num" data-key="{html.escape(path)}" data-value="{html.escape(json.dumps(v), quote=True)}">'
            f'{fmt_number(v) if text is None else text}</td>')


def kv_table(data: dict, rows: Sequence[tuple[str, str | None, str]], extra_rows: str = "") -> str:
    """(quantity, value, meaning) table of ``rows`` (label, path into ``data``, meaning); path None starts a group."""
    def row(label: str, path: str | None, expl: str) -> str:
        if path is None:
            return f'<tr class="group"><th colspan="3">{html.escape(label)}</th></tr>'
        return f'<tr><td>{html.escape(label)}</td>{cell(data, path)}<td class="expl">{html.escape(expl)}</td></tr>'

    body = "".join(row(*r) for r in rows) + extra_rows
    return f'<table class="kv"><thead><tr><th>quantity</th><th>value</th><th>meaning</th></tr></thead><tbody>{body}' \
           "</tbody></table>"


def steps_table(data: dict, columns: Sequence[tuple[str, str]], rows: Sequence[int | None],
                high: Callable[[int], bool], legend: str) -> str:
    """Per-step table: a column per (key of ``data["steps"]``, heading), a row per step index in ``rows`` (None:
    an elision row); ``high(i)`` marks step i as high-noise. ``legend`` (trusted HTML) goes above."""
    def row(i: int | None) -> str:
        if i is None:
            return f'<tr><td colspan="{len(columns) + 1}">\u2026 (all steps are in report.json)</td></tr>'
        cells = "".join(cell(data, f"steps.{k}[{i}]") for k, _ in columns)
        return f'<tr class="{"high" if high(i) else "low"}"><td>{i}</td>{cells}</tr>'

    head = "<tr><th>step</th>" + "".join(f"<th>{html.escape(h)}</th>" for _, h in columns) + "</tr>"
    body = "".join(row(i) for i in rows)
    return legend + f'<table class="steps"><thead>{head}</thead><tbody>{body}</tbody></table>'


def plain_table(rows: Sequence[tuple[str, Any]]) -> str:
    """Two-column (name, value) table without data keys (the inputs)."""
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{fmt_number(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


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


def _steps_table(data: dict, max_rows: int = 80) -> str:
    st = data["steps"]
    n, half = len(st["c"]), max_rows // 2
    rows = list(range(n)) if n <= max_rows else [*range(half), None, *range(n - half, n)]
    legend = ('<p class="legend">Left border: <span style="color:#c08a2b">\u258c</span> high-noise regime '
              '(logSNR &lt; 0 at the step\'s mid-angle), <span style="color:#4f7fbf">\u258c</span> low-noise regime. '
              'Step i maps level t = i to level s = i+1; c, d: F(x) = c x + d D(x); L* = (1 \u2212 c)/d; '
              '\u03bb*: variance above which the step expands; released: data directions whose release logSNR '
              'falls in the step.</p>')
    return steps_table(data, [(k, h) for k, h in _STEP_COLUMNS if st.get(k) is not None], rows,
                       lambda i: st["regime"][i] == "high-noise", legend)


def _inputs_table(data: dict) -> str:
    inp = data["inputs"]
    return plain_table([("schedule", inp["schedule"]), ("schedule class", inp["schedule_class"]),
                        ("chain", inp["chain"]), ("spectrum", inp["spectrum"]), ("patch size (M_off)", inp["patch"]),
                        ("pifskit version", data["pifskit_version"]),
                        *((f"spectrum {k}", v) for k, v in (inp.get("spectrum_meta") or {}).items())])


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
        {"key": "key-numbers", "title": "Key numbers", "html": lambda data: kv_table(data, KEY_NUMBERS)},
        {"key": "figures", "title": "Figures", "html": "", "figures": list(figures)},
        {"key": "steps", "title": "Per-step geometry", "html": _steps_table},
        {"key": "inputs", "title": "Inputs", "html": _inputs_table},
        *({"key": s["key"], "title": s["title"], "html": s["html"], "extra": True,
           "figures": [{"label": s["key"], **f} for f in s.get("figures") or ()]} for s in extra_sections),
    ]
