"""The ``--numerical`` branch of ``pifskit lyapunov``: Benettin / top-k JVP spectrum (pifskit.torch).

Without ``--model`` it runs on the exact linear Gaussian denoiser of the chosen spectrum (in its
principal basis), so the result is directly comparable with the analytic exponents (reported
beside it as ``analytic_exponents`` and ``max_abs_error``). With ``--model module:factory`` (or a
checkpoint path) it runs on that model along trajectories from N(0, I).
"""

from __future__ import annotations

import argparse

import numpy as np

from .._validate import PifsError, check_positive_int
from ..chains import Chain
from ..lyapunov import kaplan_yorke, lyapunov_exponents
from ..spectra import Spectrum

__all__ = ["add_numerical_options", "numerical_result"]

#: largest dimension for the default k = d
FULL_K_MAX = 512


def add_numerical_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("numerical spectrum (pifskit.torch)")
    g.add_argument("--numerical", action="store_true",
                   help="compute the exponents numerically (Benettin QR with batched JVPs) instead of analytically")
    g.add_argument("--k", type=int, default=None, help=f"top-k exponents (default: d if d <= {FULL_K_MAX}, else 32)")
    g.add_argument("--trajectories", type=int, default=2, help="trajectories averaged (default 2)")
    g.add_argument("--model", default=None, metavar="ENTRY",
                   help="'module:factory' or checkpoint path (default: the exact Gaussian denoiser of --spectrum)")
    g.add_argument("--float64", action="store_true", help="float64 arithmetic (recommended for validation)")
    g.add_argument("--refine", type=int, default=3,
                   help="forward-backward sweeps aligning the frame with the top-k singular vectors (default 3; "
                        "not needed when k = d)")
    g.add_argument("--seed", type=int, default=0, help="seed of trajectories and initial frame")


def numerical_result(args: argparse.Namespace, schedule, chain: Chain, spectrum: Spectrum) -> dict:
    """The numerical spectrum as a dict with the analytic command's keys, plus spread and k."""
    import torch

    from ..torch.adapter import ChainDenoiser, GaussianDenoiser, ModelDenoiser
    from ..torch.lyapunov import lyapunov_spectrum

    dtype = torch.float64 if args.float64 else torch.float32
    gen = torch.Generator().manual_seed(int(args.seed))
    M = check_positive_int(args.trajectories, "trajectories")
    if args.model:
        from ..torch.analysis import load_model, make_denoiser, model_info

        model, info = load_model(args.model)
        info = model_info(info)
        cd = make_denoiser(model, info, chain, schedule, dtype)
        shape = info["sample_shape"]
        label = args.model
    else:
        shape = (spectrum.d,)
        g = GaussianDenoiser(spectrum.eigenvalues, None, shape, dtype=dtype)
        cd = ChainDenoiser(ModelDenoiser(g, "sample", "logsnr"), chain)
        label = f"exact Gaussian denoiser of {spectrum.name}"
    d = int(np.prod(shape))
    k = args.k if args.k is not None else (d if d <= FULL_K_MAX else 32)
    k = check_positive_int(k, "k")
    if k > d:
        raise PifsError(f"--k {k} exceeds the dimension d = {d}; k must lie in [1, {d}]")
    x = torch.randn((M,) + tuple(shape), generator=gen, dtype=dtype)
    res = lyapunov_spectrum(cd.step, chain.n_steps, x, k, refine=0 if k == d else int(args.refine), generator=gen)
    ex = res.exponents
    from .lyapunov_cmd import result_header

    out = {
        **result_header("numerical", chain, spectrum.name, d),
        "model": label,
        "k": k,
        "trajectories": M,
        "dtype": "float64" if args.float64 else "float32",
        "exponents": ex,
        "spread": res.spread,
        "kaplan_yorke": res.kaplan_yorke,
        "kaplan_yorke_spread": res.to_dict()["kaplan_yorke_spread"],
        "kaplan_yorke_is_lower_bound": res.ky_is_lower_bound,
        "n_positive": int(np.count_nonzero(ex > 0)),
        "exponent_sum": float(ex.sum()),
    }
    if not args.model or spectrum.d == d:
        ana = np.sort(lyapunov_exponents(chain, spectrum))[::-1]
        out["eigenvalues"] = spectrum.eigenvalues[:k]
        out["analytic_exponents"] = ana[:k]
        out["analytic_kaplan_yorke"] = kaplan_yorke(ana)
        fin = np.isfinite(ana[:k]) & np.isfinite(ex)
        out["max_abs_error"] = float(np.max(np.abs(ex[fin] - ana[:k][fin]))) if fin.any() else float("nan")
    else:
        out["eigenvalues"] = np.full(k, np.nan)
    return out
