"""pifskit lyapunov: the chain's Lyapunov spectrum on a data spectrum and its Kaplan-Yorke dimension.

Analytic (Gaussian surrogate) by default; ``--numerical`` (pifskit.torch: block Krylov SVD or Benettin) adds
error bounds and convergence flags, on the exact Gaussian denoiser of the spectrum (so
``analytic_exponents`` and ``max_abs_error`` compare directly) or on ``--model`` along trajectories.
"""

from __future__ import annotations

import argparse

import numpy as np

from .._json import fmt_num
from ..chains import Chain
from ..lyapunov import FULL_K_MAX, kaplan_yorke, lyapunov_exponents
from ..spectra import Spectrum
from ._common import (
    add_chain_options,
    add_json_option,
    add_spectrum_options,
    chain_from_args,
    dump_json,
    spectrum_from_args,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("lyapunov", help="Lyapunov spectrum and Kaplan-Yorke dimension of a chain",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chain_options(p)
    add_spectrum_options(p)
    p.add_argument("--top", type=int, default=10, help="exponents shown in the table (default 10; JSON has all)")
    add_numerical_options(p)
    add_json_option(p)
    p.set_defaults(handler=run)


#: the flags passed to pifskit.torch.analysis.numerical_lyapunov as keyword arguments
NUMERICAL_OPTIONS = ("k", "trajectories", "model", "float64", "method", "tol", "oversample", "max_matvecs",
                     "refine", "seed")


def add_numerical_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("numerical spectrum (pifskit.torch)")
    g.add_argument("--numerical", action="store_true",
                   help="compute the exponents numerically (block Krylov SVD of the product Jacobian by "
                        "batched JVPs/VJPs) instead of analytically")
    g.add_argument("--k", type=int, default=None, help=f"top-k exponents (default: d if d <= {FULL_K_MAX}, else 32)")
    g.add_argument("--trajectories", type=int, default=2, help="trajectories averaged (default 2)")
    g.add_argument("--model", default=None, metavar="ENTRY",
                   help="'module:factory' or checkpoint path (default: the exact Gaussian denoiser of --spectrum)")
    g.add_argument("--float64", action="store_true", help="float64 arithmetic (default float32)")
    g.add_argument("--method", choices=("krylov", "benettin"), default="krylov",
                   help="krylov: block Krylov SVD with residual error bounds (default); benettin: QR frame "
                        "propagation with --refine sweeps (no bounds)")
    g.add_argument("--tol", type=float, default=None,
                   help="Krylov: stop when every exponent's error bound <= TOL * max(1, |exponent|) "
                        "(default 1e-6 in float64, 1e-3 in float32)")
    g.add_argument("--oversample", type=int, default=None, metavar="P",
                   help="Krylov block size k + P (default P = k // 4 + 4)")
    g.add_argument("--max-matvecs", type=int, default=None, metavar="N",
                   help="Krylov: at most N products with the chain Jacobian or its transpose (default 40 (k + P))")
    g.add_argument("--refine", type=int, default=3,
                   help="benettin: forward-backward sweeps aligning the frame with the top-k singular vectors "
                        "(default 3; not needed when k = d)")
    g.add_argument("--seed", type=int, default=0, help="seed of trajectories and initial frame")


def result_header(method: str, chain: Chain, spectrum_name: str, d: int) -> dict:
    """The keys every Lyapunov result starts with (analytic and numerical alike)."""
    return {"method": method, "chain": chain.name, "n_steps": chain.n_steps, "lands_clean": chain.lands_clean,
            "alpha_bar": chain.alpha_bar, "logsnr": chain.logsnr, "spectrum": spectrum_name, "d": d}


def analytic_result(chain: Chain, spectrum: Spectrum) -> dict:
    """Surrogate exponents (descending; exponents[k] belongs to eigenvalues[k]) and the KY dimension as a
    JSON-ready dict: the header keys, eigenvalues, exponents, kaplan_yorke, n_positive, exponent_sum."""
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
    bound, conv = result.get("error_bound"), result.get("exponent_converged")
    table = Table()
    for col in ("i", "\u03bb_i", "\u039b_i") + (("\u00b1 bound", "converged") if bound is not None else ()):
        table.add_column(col, justify="center" if col == "converged" else "right")

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
        from ..torch.analysis import numerical_lyapunov

        body = numerical_lyapunov(schedule, chain, spectrum, **{k: getattr(args, k) for k in NUMERICAL_OPTIONS})
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
