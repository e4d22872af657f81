"""The ``--numerical`` branch of ``pifskit lyapunov``: Krylov (default) or Benettin spectrum (pifskit.torch).

Without ``--model`` it runs on the exact linear Gaussian denoiser of the chosen spectrum (in its
principal basis), so the result is directly comparable with the analytic exponents (reported
beside it as ``analytic_exponents`` and ``max_abs_error``). With ``--model module:factory`` (or a
checkpoint path) it runs on that model along trajectories from N(0, I). Takes values, not the
argparse Namespace; ``lyapunov_cmd`` adds the common header keys.
"""

from __future__ import annotations

import argparse

import numpy as np

from .._validate import PifsError, check_positive_int
from ..chains import Chain
from ..lyapunov import kaplan_yorke, lyapunov_exponents
from ..spectra import Spectrum

__all__ = ["add_numerical_options", "numerical_options", "numerical_result"]

#: largest dimension for the default k = d
FULL_K_MAX = 512


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


def numerical_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`numerical_result` from parsed flags."""
    return {"k": args.k, "trajectories": args.trajectories, "model": args.model, "float64": args.float64,
            "method": args.method, "tol": args.tol, "oversample": args.oversample,
            "max_matvecs": args.max_matvecs, "refine": args.refine, "seed": args.seed}


def numerical_result(schedule, chain: Chain, spectrum: Spectrum, *, k: int | None = None, trajectories: int = 2,
                     model: str | None = None, float64: bool = False, method: str = "krylov",
                     tol: float | None = None, oversample: int | None = None, max_matvecs: int | None = None,
                     refine: int = 3, seed: int = 0) -> dict:
    """The numerical spectrum as a dict with the analytic command's keys (less the header), plus
    spread, k, and the Krylov diagnostics (error_bound, exponent_converged, converged, matvecs, clusters)."""
    import torch

    from ..torch.adapter import ChainDenoiser, GaussianDenoiser, ModelDenoiser
    from ..torch.lyapunov import lyapunov_spectrum

    dtype = torch.float64 if float64 else torch.float32
    gen = torch.Generator().manual_seed(int(seed))
    M = check_positive_int(trajectories, "trajectories")
    if model:
        from ..torch.analysis import load_model, make_denoiser, model_info

        net, info = load_model(model)
        info = model_info(info)
        cd = make_denoiser(net, info, chain, schedule, dtype)
        shape = info["sample_shape"]
        label = model
    else:
        shape = (spectrum.d,)
        g = GaussianDenoiser(spectrum.eigenvalues, None, shape, dtype=dtype)
        cd = ChainDenoiser(ModelDenoiser(g, "sample", "logsnr"), chain)
        label = f"exact Gaussian denoiser of {spectrum.name}"
    d = int(np.prod(shape))
    k = k if k is not None else (d if d <= FULL_K_MAX else 32)
    k = check_positive_int(k, "k")
    if k > d:
        raise PifsError(f"--k {k} exceeds the dimension d = {d}; k must lie in [1, {d}]")
    x = torch.randn((M,) + tuple(shape), generator=gen, dtype=dtype)
    if method == "krylov":
        res = lyapunov_spectrum(cd.step, chain.n_steps, x, k, method="krylov", tol=tol, oversample=oversample,
                                max_matvecs=max_matvecs, generator=gen)
    else:
        res = lyapunov_spectrum(cd.step, chain.n_steps, x, k, method="benettin",
                                refine=0 if k == d else int(refine), generator=gen)
    ex = res.exponents
    info = res.to_dict()
    out = {
        "d": d,
        "model": label,
        "k": k,
        "trajectories": M,
        "dtype": "float64" if float64 else "float32",
        "numerical_method": method,
        "exponents": ex,
        "spread": res.spread,
        "converged": res.converged,
        "kaplan_yorke": res.kaplan_yorke,
        "kaplan_yorke_spread": info["kaplan_yorke_spread"],
        "kaplan_yorke_is_lower_bound": res.ky_is_lower_bound,
        "n_positive": int(np.count_nonzero(ex > 0)),
        "exponent_sum": float(ex.sum()),
    }
    for key in ("error_bound", "exponent_converged", "tol", "matvecs", "jvps", "vjps", "basis_size", "block",
                "clusters", "cut_in_cluster", "next_exponent"):
        if key in info:
            out[key] = info[key]
    if not model or spectrum.d == d:
        ana = np.sort(lyapunov_exponents(chain, spectrum))[::-1]
        out["eigenvalues"] = spectrum.eigenvalues[:k]
        out["analytic_exponents"] = ana[:k]
        out["analytic_kaplan_yorke"] = kaplan_yorke(ana)
        fin = np.isfinite(ana[:k]) & np.isfinite(ex)
        out["max_abs_error"] = float(np.max(np.abs(ex[fin] - ana[:k][fin]))) if fin.any() else float("nan")
    else:
        out["eigenvalues"] = np.full(k, np.nan)
    return out
