"""pifskit geometry: the model-free per-step geometry of a sampling chain.

Prints, per step, c_t, d_t, L*_t = (1 - c_t)/d_t and lambda*_t, plus the global
threshold lambda** and the regime boundary step. ``--lambda-points K`` adds the
chain exponent Lambda(lambda) and the map f_t(lambda) on a K-point log grid.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from .._json import fmt_num
from .._validate import PifsError
from ..chains import Chain
from ..geometry import (
    chain_exponent,
    contraction_threshold,
    expansion_function,
    expansion_threshold,
    global_threshold,
    lambda_grid,
    regime_boundary_step,
    step_coefficients,
)
from ._common import add_chain_options, add_json_option, chain_from_args, dump_json


def register(subparsers) -> None:
    p = subparsers.add_parser("geometry", help="per-step contraction/expansion thresholds of a sampling chain",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chain_options(p)
    g = p.add_argument_group("lambda grid")
    g.add_argument("--lambda-points", type=int, default=0, metavar="K",
                   help="also output Lambda(lambda) and f_t(lambda) on K log-spaced lambda values (default 0: omit)")
    g.add_argument("--lambda-min", type=float, default=1e-4, help="smallest lambda of the grid (default 1e-4)")
    g.add_argument("--lambda-max", type=float, default=1e4, help="largest lambda of the grid (default 1e4)")
    add_json_option(p)
    p.set_defaults(handler=run)


def geometry_result(chain: Chain, lambda_grid: np.ndarray | None = None) -> dict:
    """The command's JSON object (numpy values; ``dump_json`` writes inf as 'inf')."""
    c, d = step_coefficients(chain)
    out = {
        "chain": chain.name,
        "n_steps": chain.n_steps,
        "lands_clean": chain.lands_clean,
        "starts_from_noise": chain.starts_from_noise,
        "alpha_bar": chain.alpha_bar,
        "logsnr": chain.logsnr,
        "sigmas": chain.sigmas,
        "timesteps": None if chain.timesteps is None else np.asarray(chain.timesteps),
        "c": c,
        "d": d,
        "L_star": contraction_threshold(chain),
        "lambda_star": expansion_threshold(chain),
        "lambda_2star": global_threshold(chain),
        "regime_boundary_step": regime_boundary_step(chain),
    }
    if lambda_grid is not None:
        out["lambda_grid"] = lambda_grid
        out["Lambda"] = chain_exponent(chain, lambda_grid)
        out["f"] = expansion_function(chain, lambda_grid)
    return out


def _grid(args: argparse.Namespace) -> np.ndarray | None:
    K = args.lambda_points
    if not K:
        return None
    if K < 0:
        raise PifsError(f"--lambda-points must be >= 0, got {K}")
    lo, hi = args.lambda_min, args.lambda_max
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise PifsError(f"need 0 < --lambda-min < --lambda-max (finite), got {lo} and {hi}")
    return lambda_grid(K, lo, hi) if K > 1 else np.array([lo])


def _print_table(result: dict, schedule_label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def _fmt(x) -> str:
        return fmt_num(None if x is None else float(x), ".5g")

    N, b, ts = result["n_steps"], result["regime_boundary_step"], result["timesteps"]
    table = Table(title=f"PIFS geometry: {schedule_label}, {result['chain']} ({N} steps)", title_justify="left")
    for col in ("step", "timestep", "\u1fb1 t", "\u1fb1 s", "logSNR t", "c", "d", "L*", "\u03bb*", "regime"):
        table.add_column(col, justify="right" if col != "regime" else "left", no_wrap=True)
    ab, l = result["alpha_bar"], result["logsnr"]
    for i in range(N):
        table.add_row(str(i), "-" if ts is None else str(int(ts[i])), _fmt(ab[i]), _fmt(ab[i + 1]), _fmt(l[i]),
                      _fmt(result["c"][i]), _fmt(result["d"][i]), _fmt(result["L_star"][i]),
                      _fmt(result["lambda_star"][i]), "high" if i < b else "low")
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 120))
    console.print(table)
    console.print(f"\u03bb** (global expansion threshold) = {_fmt(result['lambda_2star'])}   "
                  f"regime boundary step = {b} (steps before it: high noise, logSNR < 0)")
    console.print(f"lands on the clean endpoint: {result['lands_clean']}   "
                  f"starts from pure noise: {result['starts_from_noise']}")


def run(args: argparse.Namespace) -> int:
    grid = _grid(args)
    schedule, chain = chain_from_args(args)
    result = geometry_result(chain, grid)
    label = args.diffusers_config or args.schedule
    result = {"schedule": label, "schedule_name": getattr(schedule, "name", type(schedule).__name__), **result}
    if args.json:
        dump_json(result)
    else:
        _print_table(result, label)
    return 0
