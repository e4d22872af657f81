"""pifskit report: the main job. Writes report.html (self-contained), report.json and PNG figures.

With no options it runs on the embedded defaults: the Stable Diffusion training
schedule (sd), 10 DDIM steps with trailing spacing, a 64x64x3 power-law
(exponent 2) image spectrum with ImageNet's per-pixel variance 0.2043, and 8x8
patches. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._json import fmt_num
from ..report import REPORT_HTML, REPORT_JSON, build_report
from ..report.figures import FIGURES
from ..report.sampling_steps import sampling_steps_section
from ._common import (
    add_chain_options,
    add_json_option,
    add_spectrum_options,
    chain_from_args,
    dump_json,
    progress,
    spectrum_from_args,
)

DEFAULT_OUT = "pifs-report"
DEFAULT_PATCH = 8


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write the PIFS geometry report (HTML + JSON + PNG figures)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory (default {DEFAULT_OUT}/; created if missing, files overwritten)")
    add_chain_options(p)
    add_spectrum_options(p)
    p.add_argument("--no-design", action="store_true",
                   help="leave out the design sections: the sampling steps designed for this schedule beside the "
                        "common lists, and the theory-vs-practice table (saves ~1.5 s)")
    p.add_argument("--patch", type=int, default=DEFAULT_PATCH,
                   help=f"patch side for the off-diagonal block mass M_off (default {DEFAULT_PATCH}; "
                        "must tile the image)")
    add_json_option(p)
    p.set_defaults(handler=run)


def design_section() -> dict:
    """The theory-vs-practice table (design criteria I-III vs the four published practices)."""
    from ..design.practice import practice_table, practice_table_html

    rows = practice_table()
    intro = ("<p>Each row: a published design choice, the value pifskit derives from the PIFS geometry "
             "(docs/design.md), the inputs used, and the ratio (or, for step lists, the RMS of the "
             "log-sigma differences over the noisy levels). These rows do not depend on the schedule "
             "analysed above.</p>")
    return {"key": "design", "title": "Theory vs practice: design criteria", "html": intro + practice_table_html(rows),
            "data": {"rows": rows}}


def _figure_files(files: dict) -> list[str]:
    """The PNG names of ``report.json``'s ``files.figures``: built-in figures by key, a section's as a dict."""
    out = []
    for v in files.values():
        out += [n for n in v.values() if n] if isinstance(v, dict) else [v] if v else []
    return out


def run(args: argparse.Namespace) -> int:
    spectrum = spectrum_from_args(args)
    schedule, chain = chain_from_args(args)
    label = args.diffusers_config or args.schedule
    out = Path(args.out)
    sections = [] if args.no_design else [sampling_steps_section(schedule, chain, spectrum), design_section()]
    with progress("drawing figures", total=len(FIGURES), enabled=not args.json) as advance:
        data = build_report(schedule, chain, spectrum, out, patch=args.patch, schedule_label=label,
                            progress=advance, extra_sections=sections)
    html_path = (out / REPORT_HTML).resolve()
    sm = data["summary"]
    if args.json:
        dump_json({
            "out_dir": str(out.resolve()),
            "html": str(html_path),
            "json": str((out / REPORT_JSON).resolve()),
            "figures": [str((out / name).resolve()) for name in _figure_files(data["files"]["figures"])],
            "summary": sm,
        })
        return 0
    print(f"pifskit report: {label}, {data['inputs']['chain']} ({sm['n_steps']} steps, "
          f"{'lands' if sm['lands_clean'] else 'does not land'} clean), spectrum {data['inputs']['spectrum']} "
          f"(d = {sm['d']})")
    print(f"  lambda** = {fmt_num(sm['lambda_2star'])}   KY dimension = {fmt_num(sm['kaplan_yorke'])} of {sm['d']}   "
          f"regime boundary step = {sm['regime_boundary_step']}")
    print(f"  L* first/last = {fmt_num(sm['L_star_first'])} / {fmt_num(sm['L_star_last'])}   "
          f"M_off first/last = {fmt_num(sm['M_off_first'])} / {fmt_num(sm['M_off_last'])}")
    if not data["block_mass"]["available"]:
        print(f"  note: {data['block_mass']['note']}")
    print(f"report: {html_path}")
    return 0
