"""pifskit's reports: one page writer, the PIFS geometry report, the analyze-model and benchmark pages.

    build_report(schedule, chain, spectrum, out_dir, patch=8, extra_sections=[...]) -> dict

writes ``report.json`` (the dict), ``a_thresholds.png`` ... ``f_lyapunov.png``
and ``report.html`` (figures embedded as data URIs, opens offline). Every page is
written by :func:`pifskit.report.page.write_page` from one Jinja2 skeleton
(``templates/page.html``); figures are matplotlib ``Figure`` objects on the Agg
canvas. ``extra_sections`` is the extension point for other analyses (see
:mod:`pifskit.report.build`); :mod:`pifskit.report.model` is the analyze-model
page and :mod:`pifskit.report.exact_bench` the sampling-benchmark page.
"""

from .build import REPORT_HTML, REPORT_JSON, build_report, figure_file
from .data import compute_report_data, to_jsonable
from .figures import FIGURES
from .html import fmt_number, lookup
from .page import png_data_uri, write_page

__all__ = ["build_report", "compute_report_data", "to_jsonable", "fmt_number", "lookup", "png_data_uri", "FIGURES",
           "REPORT_HTML", "REPORT_JSON", "figure_file", "write_page"]
