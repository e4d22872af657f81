"""``build_report``: compute once, write ``report.json``, the PNG figures and a self-contained ``report.html``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .. import __version__
from .._validate import PifsError
from ..chains import Chain
from ..schedules import Schedule
from ..spectra import Spectrum
from .data import compute_report_data
from .figures import FIGURES
from .html import FOOTER, render_sections, subtitle_html
from .page import render_png, write_page

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def figure_file(index: int, key: str) -> str:
    """File name of the index-th built-in figure, e.g. ``a_thresholds.png``."""
    return f"{'abcdefghijklmnopqrstuvwxyz'[index]}_{key}.png"


def _check_sections(sections: Sequence[dict], reserved: set[str]) -> list[dict]:
    seen: set[str] = set()
    for s in sections:
        if not isinstance(s, dict):
            raise PifsError("each extra section must be a dict with key, title, html, data")
        missing = [k for k in ("key", "title", "html", "data") if k not in s]
        if missing:
            raise PifsError(f"extra section lacks {', '.join(missing)} (needs key, title, html, data)")
        key = s["key"]
        if not isinstance(key, str) or not _KEY.match(key):
            raise PifsError(f"extra section key must be an identifier (letters, digits, _ or -), got {key!r}")
        if key in reserved or key in seen:
            raise PifsError(f"extra section key {key!r} collides with an existing report key")
        if not isinstance(s["title"], str) or not isinstance(s["html"], str) or not isinstance(s["data"], dict):
            raise PifsError(f"extra section {key!r}: title and html must be str, data a dict")
        seen.add(key)
    return list(sections)


def build_report(schedule: Schedule, chain: Chain, spectrum: Spectrum, out_dir: str | Path, patch: int = 8, *,
                 schedule_label: str | None = None, extra_sections: Sequence[dict] = (),
                 lambda_points: int = 256, map_points: int = 96, dpi: int = 110,
                 progress=None) -> dict:
    """Write the report into ``out_dir`` and return the dict written to ``report.json``.

    The dict has the layout of :func:`compute_report_data` (JSON-safe: inf as the string 'inf'), plus
    ``files`` (names relative to ``out_dir``) and one entry per extra section. ``extra_sections`` (the
    extension point) are dicts ``{"key", "title", "html", "data", "figures": [{"key", "title", "caption",
    "png": bytes}] (optional)}``: ``data`` is stored as ``report.json[key]``, ``html`` (a trusted fragment,
    best built with :func:`pifskit.report.html.fmt_number` from ``data``) goes in ``<section id=key>``, each
    figure is written as ``<key>-<figure key>.png``. ``progress``, if given, is called once per figure drawn.
    """
    raw = compute_report_data(schedule, chain, spectrum, patch=patch, schedule_label=schedule_label,
                              lambda_points=lambda_points, map_points=map_points)
    extras = _check_sections(list(extra_sections or ()), set(raw) | {"files"})

    figures, files = [], {}
    for i, spec in enumerate(FIGURES):
        name = figure_file(i, spec.key)
        fig = spec.draw(raw)
        note = None
        if fig is None:
            note = raw["block_mass"]["note"] if spec.key == "block_mass" else "not available for these inputs"
        figures.append({"key": spec.key, "label": name[0], "title": spec.title, "caption": spec.caption,
                        "note": note, "file": name, "png": None if fig is None else render_png(fig, dpi=dpi)})
        files[spec.key] = None if fig is None else name
        if progress is not None:
            progress()
    for s in extras:
        if s.get("figures"):
            files[s["key"]] = {f["key"]: f"{s['key']}-{f['key']}.png" for f in s["figures"]}

    data = {**raw, "files": {"figures": files}, **{s["key"]: s["data"] for s in extras}}
    inp, sm = raw["inputs"], raw["summary"]
    return write_page(out_dir, data, render_sections(figures, extras),
                      title=f"PIFS geometry report \u2014 {inp['schedule']}, {inp['chain']}",
                      heading="PIFS geometry of a DDIM chain", subtitle=subtitle_html(inp, sm),
                      footer=FOOTER.format(version=__version__))
