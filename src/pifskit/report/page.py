"""The one report writer (:func:`write_page`) of every pifskit page (``report``, ``analyze-model``, ``bench
sampling``): ``report.json``, the PNG figures and a self-contained ``report.html`` from the Jinja2 skeleton
``templates/page.html``. Figures are :class:`matplotlib.figure.Figure` on the Agg canvas; no pyplot.
"""

from __future__ import annotations

import base64
import html
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from .._json import to_jsonable
from .._validate import PifsError

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in the HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def new_figure(size: tuple[float, float] = (7.6, 4.2), ncols: int = 1, **subplots: Any):
    """(Figure, axes) on its own Agg canvas, constrained layout; nothing global is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, **subplots)


def finish_axes(ax, ylabel: str, title: str, *, xlabel: str | None = None, grid: dict | None = None,
                legend: dict | None = None) -> None:
    """Axis labels and title; a grid (alpha 0.3, updated by ``grid``) and a legend (framealpha 0.9, updated
    by ``legend``) when given."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if grid is not None:
        ax.grid(**{"alpha": 0.3, **grid})
    if legend is not None:
        ax.legend(**{"framealpha": 0.9, **legend})


def render_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (PifsError if it is a file or cannot be created)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PifsError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PifsError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    return out


def write_file(path: Path, content: bytes | str) -> None:
    """Write bytes or UTF-8 text; OSError -> PifsError naming the file."""
    try:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise PifsError(f"cannot write {path}: {exc.strerror or exc}") from None


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("pifskit.report", "templates"), autoescape=select_autoescape(["html"]),
                      keep_trailing_newline=True)
    env.filters["data_uri"] = png_data_uri
    env.filters["esc"] = lambda v: Markup(html.escape(str(v)))
    return env.get_template("page.html")


def write_page(out_dir: str | Path, data: dict, sections: Sequence[dict], *, title: str, heading: str,
               subtitle: str = "", footer: str = "") -> dict:
    """Write the figures, ``report.json`` (``data`` plus ``files``) and ``report.html``; return the JSON dict.

    A section is ``{"key", "title", "html": str | callable(parsed JSON) -> str, "figures": [{"key", "title",
    "caption", "png": bytes | None, "note", "file", "label"}]}``: a callable ``html`` formats its numbers from
    what ``report.json`` holds; a figure's file defaults to ``<section key>-<figure key>.png``; one with
    ``png`` None is shown as its note and its stale file removed. ``data["files"]`` becomes {"html", "json",
    "figures": {section key: {figure key: file or None}}} unless ``data`` already has a ``files`` entry (then its
    ``figures`` are kept as given). ``subtitle`` and ``footer`` are trusted HTML.
    """
    out = prepare_out_dir(out_dir)
    shown, fig_files = [], {}
    for s in sections:
        figs, names = [], {}
        for i, f in enumerate(s.get("figures") or ()):
            name = f.get("file") or f"{s['key']}-{f['key']}.png"
            if f.get("png") is not None:
                write_file(out / name, f["png"])
            elif (out / name).is_file():
                (out / name).unlink()
            names[f["key"]] = None if f.get("png") is None else name
            figs.append({"label": f.get("label") or f"{s['key']}{'' if i == 0 else i + 1}", "note": "", "caption": "",
                         **f, "file": name})
        if names:
            fig_files[s["key"]] = names
        shown.append({**s, "figures": figs})
    data = dict(data)
    files = data.get("files") or {}
    data["files"] = {"html": REPORT_HTML, "json": REPORT_JSON, "figures": files.get("figures", fig_files)}
    # the JSON must round-trip: serialise first, render the page from the parsed copy
    text = json.dumps(to_jsonable(data), indent=1, allow_nan=False)
    parsed = json.loads(text)
    write_file(out / REPORT_JSON, text + "\n")
    for s in shown:
        if callable(s.get("html")):
            s["html"] = s["html"](parsed)
    page = _template().render(title=title, heading=heading, subtitle=subtitle, footer=footer, sections=shown)
    write_file(out / REPORT_HTML, page)
    return parsed
