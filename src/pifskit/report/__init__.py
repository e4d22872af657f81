"""The PIFS geometry report: one dict of numbers, PNG figures and a self-contained HTML page.

    build_report(schedule, chain, spectrum, out_dir, patch=8, extra_sections=[...]) -> dict

writes ``report.json`` (the dict), ``a_thresholds.png`` ... ``f_lyapunov.png``
and ``report.html`` (figures embedded as data URIs, opens offline). numpy +
matplotlib (Agg canvas) only. ``extra_sections`` is the extension point for
other analyses (see :mod:`pifskit.report.build`).
"""

from .build import REPORT_HTML, REPORT_JSON, build_report, figure_file
from .data import compute_report_data, to_jsonable
from .figures import FIGURES
from .html import fmt_number, lookup, png_data_uri

__all__ = ["build_report", "compute_report_data", "to_jsonable", "fmt_number", "lookup", "png_data_uri", "FIGURES",
           "REPORT_HTML", "REPORT_JSON", "figure_file"]
