"""pifskit lyapunov: the chain's Lyapunov spectrum on a data spectrum and its Kaplan-Yorke dimension.

Analytic (Gaussian surrogate): Lambda_k = sum_t log f_t(lambda_k), sorted
descending; the Kaplan-Yorke dimension is the root of the discrete Moran
equation. A numerical (QR / Benettin, trained denoiser) branch plugs in beside
analytic_result() and returns the same keys (plus error bounds and convergence flags).
"""

from __future__ import annotations

import argparse

import numpy as np

from .._json import fmt_num
from ..chains import Chain
from ..lyapunov import kaplan_yorke, lyapunov_exponents
from ..spectra import Spectrum
from ._common import (
    add_chain_options,
    add_json_option,
    add_spectrum_options,
    chain_from_args,
    dump_json,
    spectrum_from_args,
)
from .lyapunov_numerical import add_numerical_options, numerical_options, numerical_result


def register(subparsers) -> None:
    p = subparsers.add_parser("lyapunov", help="Lyapunov spectrum and Kaplan-Yorke dimension of a chain",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chain_options(p)
    add_spectrum_options(p)
    p.add_argument("--top", type=int, default=10, help="exponents shown in the table (default 10; JSON has all)")
    add_numerical_options(p)
    add_json_option(p)
    p.set_defaults(handler=run)


def result_header(method: str, chain: Chain, spectrum_name: str, d: int) -> dict:
    """The keys every Lyapunov result starts with (analytic and numerical alike)."""
    return {"method": method, "chain": chain.name, "n_steps": chain.n_steps, "lands_clean": chain.lands_clean,
            "alpha_bar": chain.alpha_bar, "logsnr": chain.logsnr, "spectrum": spectrum_name, "d": d}


def analytic_result(chain: Chain, spectrum: Spectrum) -> dict:
    """Surrogate exponents and KY dimension as a JSON-ready dict (numpy values).

    Keys: method, chain, n_steps, lands_clean, alpha_bar, logsnr, spectrum, d,
    eigenvalues (descending), exponents (descending, exponents[k] belongs to
    eigenvalues[k]), kaplan_yorke, n_positive, exponent_sum.
    """
    ex = np.sort(lyapunov_exponents(chain, spectrum))[::-1]
    return {
        **result_header("analytic", chain, spectrum.name, spectrum.d),
        "eigenvalues": spectrum.eigenvalues,
        "exponents": ex,
        "kaplan_yorke": kaplan_yorke(ex),
        "n_positive": int(np.count_nonzero(ex > 0)),
        "exponent_sum": float(ex.sum()),
    }


def _fmt(x) -> str:
    return fmt_num(float(x), ".6g")


def _print_summary(result: dict, schedule_label: str, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    console.print(f"Lyapunov spectrum ({result['method']}): {schedule_label}, {result['chain']} "
                  f"({result['n_steps']} steps), spectrum {result['spectrum']}")
    table = Table()
    table.add_column("i", justify="right")
    table.add_column("\u03bb_i", justify="right")
    table.add_column("\u039b_i", justify="right")
    bound, conv = result.get("error_bound"), result.get("exponent_converged")
    if bound is not None:
        table.add_column("\u00b1 bound", justify="right")
        table.add_column("converged", justify="center")

    def row(i: int) -> list[str]:
        cells = [str(i + 1), _fmt(ev[i]), _fmt(ex[i]) + ("" if conv is None or conv[i] else " *")]
        if bound is not None:
            cells += [f"{float(bound[i]):.1e}", "yes" if conv[i] else "NO"]
        return cells

    ev, ex = result["eigenvalues"], result["exponents"]
    n = min(max(top, 0), len(ex))
    for i in range(n):
        table.add_row(*row(i))
    if n < len(ex):
        table.add_row("...", "", "", *([""] * (2 if bound is not None else 0)))
        table.add_row(*row(len(ex) - 1))
    console.print(table)
    if bound is not None:
        status = "converged" if result["converged"] else "NOT CONVERGED (* marks exponents above the tolerance)"
        console.print(f"Krylov: {status}; tol {result['tol']:.0e}, {result['matvecs']} chain products "
                      f"({result['jvps']} JVPs + {result['vjps']} VJPs), basis {result['basis_size']}")
        for a, b in result.get("clusters", []):
            console.print(f"cluster: exponents {a}..{b} agree within their bounds"
                          + (" (straddles the cut at k; the top-k set is not unique)"
                             if result.get("cut_in_cluster") and b > result["k"] else ""))
    console.print(f"Kaplan-Yorke dimension = {_fmt(result['kaplan_yorke'])} of d = {result['d']}   "
                  f"positive exponents = {result['n_positive']}   sum = {_fmt(result['exponent_sum'])}")


def run(args: argparse.Namespace) -> int:
    spectrum = spectrum_from_args(args)
    schedule, chain = chain_from_args(args)
    if args.numerical:
        body = numerical_result(schedule, chain, spectrum, **numerical_options(args))
        result = {**result_header("numerical", chain, spectrum.name, body["d"]), **body}
    else:
        result = analytic_result(chain, spectrum)
    label = args.diffusers_config or args.schedule
    result = {"schedule": label, "schedule_name": getattr(schedule, "name", type(schedule).__name__), **result}
    if args.json:
        dump_json(result)
    else:
        _print_summary(result, label, args.top)
    return 0
