"""pifskit's reports, all written by :func:`pifskit.report.page.write_page`: the PIFS geometry report
(:func:`build_report`), the analyze-model page (:mod:`.model`) and the sampling-benchmark page (:mod:`.exact_bench`).
"""

from .build import build_report, figure_file
from .._json import to_jsonable
from .data import compute_report_data
from .figures import FIGURES
from .html import fmt_number, lookup
from .page import REPORT_HTML, REPORT_JSON, png_data_uri, write_page

__all__ = ["build_report", "compute_report_data", "to_jsonable", "fmt_number", "lookup", "png_data_uri", "FIGURES",
           "REPORT_HTML", "REPORT_JSON", "figure_file", "write_page"]
