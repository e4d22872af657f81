"""Measure a denoiser against the PIFS geometry along its DDIM chain: L_B(D_t) beside L*_t, M_off(t)
beside the surrogate's, the numerical Lyapunov spectrum beside the analytic one (docs/torch.md#pifskit-analyze-model).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._validate import PifsError, check_positive_int
from ..blockmass import offdiag_block_mass
from ..chains import Chain
from ..geometry import contraction_threshold, regime_boundary_step, step_coefficients
from ..lyapunov import FULL_K_MAX, kaplan_yorke, lyapunov_exponents
from ..schedules import get_schedule
from ..spectra import Spectrum
from .adapter import ChainDenoiser, GaussianDenoiser, ModelDenoiser, rollout
from .blocks import Partition, block_norms, estimate_block_frob2_matrix, gaussian_block_row_sums
from .checkpoint import load_checkpoint_model
from .lyapunov import lyapunov_spectrum

#: above this dimension the block norms are estimated with probes instead of the full Jacobian
EXACT_MAX_DIM = 1024


def load_entry_point(spec: str) -> tuple[Any, dict]:
    """``module:factory`` -> (model, info); the factory returns (model, info) or a model (info = {})."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise PifsError(f"model entry point must be 'module:factory', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PifsError(f"cannot import {mod_name!r} for model entry point {spec!r}: {exc}") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise PifsError(f"{mod_name!r} has no callable {attr!r}")
    out = factory()
    model, info = (out[0], dict(out[1])) if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) \
        else (out, {})
    if not callable(model):
        raise PifsError(f"{spec} returned {type(out).__name__}; a model factory must return a model (callable "
                        "model(x, t)) or (model, info) with info['sample_shape'] = (C, H, W)")
    return model, info


def load_model(spec: str) -> tuple[Any, dict]:
    """A model from an existing checkpoint path (file or run directory) or a ``module:factory`` entry point."""
    if os.path.exists(spec):
        return load_checkpoint_model(spec)
    if ":" in spec:
        return load_entry_point(spec)
    raise PifsError(f"--model {spec!r} is neither an existing checkpoint path nor a 'module:factory' entry point")


def model_info(info: dict, *, prediction: str | None = None, convention: str | None = None,
               sample_shape: tuple[int, ...] | None = None) -> dict:
    """Normalise an info dict (keys prediction_type, sample_shape / image_shape, timestep_convention, ...)."""
    out = dict(info)
    out["prediction_type"] = prediction or info.get("prediction_type") or info.get("prediction") or "epsilon"
    out["timestep_convention"] = convention or info.get("timestep_convention") or "discrete"
    shape = sample_shape or info.get("sample_shape") or info.get("image_shape")
    if shape is None:
        raise PifsError("the model's sample shape is unknown: the factory's info needs 'sample_shape' (C, H, W)")
    out["sample_shape"] = tuple(int(v) for v in shape)
    return out


def make_denoiser(model, info: dict, chain: Chain, schedule=None, dtype: torch.dtype = torch.float32) -> ChainDenoiser:
    """Wrap the model for the chain (raises PifsError when the chain does not fit the model's convention)."""
    if hasattr(model, "to"):
        model = model.to(dtype)
    if hasattr(model, "eval"):
        model.eval()
    if info["timestep_convention"] == "continuous" and schedule is None:
        schedule = get_schedule(info.get("schedule", "cosine"))
    den = ModelDenoiser(model, info["prediction_type"], info["timestep_convention"], schedule=schedule,
                        sample_shape=info["sample_shape"], timestep_scale=float(info.get("timestep_scale", 1.0)))
    return ChainDenoiser(den, chain)


def _measure_blocks(cd: ChainDenoiser, xs: torch.Tensor, partition: Partition, points: int, exact: bool,
                    probes: int, gen: torch.Generator, progress: Callable | None) -> tuple[np.ndarray, ...]:
    """Per step, mean over ``points`` visited states of L_B (block max, spectral; NaN for probe estimates),
    L_B,F (Frobenius), M_off, and the spread (std) of L_B (L_B,F for probes)."""
    N = xs.shape[0] - 1
    LB, LB_F, Moff, LB_spread = np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(N)
    for i in range(N):
        lbs, lbfs, ms = [], [], []
        for m in range(points):
            fn = lambda v, i=i: cd.denoise(v, i)
            if exact:
                bn = block_norms(fn, xs[i][m], partition)
                lbs.append(bn.block_max)
                lbfs.append(bn.block_max_frob)
                ms.append(bn.offdiag_mass)
            else:
                F2 = estimate_block_frob2_matrix(fn, xs[i][m:m + 1], partition, n_probes=probes, generator=gen)[0]
                F2 = F2.double().cpu().numpy()
                lbfs.append(float(np.sqrt(F2).sum(axis=1).max()))
                lbs.append(float("nan"))
                ms.append(float(1.0 - np.trace(F2) / F2.sum()))
        LB[i], LB_F[i], Moff[i] = np.mean(lbs), np.mean(lbfs), np.mean(ms)
        LB_spread[i] = np.std(lbs if exact else lbfs)
        if progress is not None:
            progress(1)
    return LB, LB_F, Moff, LB_spread


def _surrogate(spectrum: Spectrum | None, shape: tuple, levels: np.ndarray, patch: int) -> dict[str, Any]:
    """The Gaussian surrogate's M_off and block norms at the levels (empty without a power grid of this shape)."""
    pg = None if spectrum is None else spectrum.power_grid
    if pg is None or len(shape) != 3 or pg.shape != tuple(shape[1:]):
        return {}
    return {"offdiag_mass": offdiag_block_mass(levels, pg, patch),
            "gaussian_block_max": gaussian_block_row_sums(levels, pg, patch, "spectral"),
            "gaussian_block_max_frob": gaussian_block_row_sums(levels, pg, patch, "fro", channels=shape[0])}


def analyze_model(model, info: dict, chain: Chain, spectrum: Spectrum | None = None, *, patch: int = 2,
                  points: int = 2, k: int = 8, trajectories: int = 2, refine: int = 1, probes: int = 8,
                  exact: bool | None = None, float64: bool = False, seed: int = 0, schedule=None,
                  clip_x0: float | None | str = "auto",
                  progress: Callable[[int], None] | None = None) -> dict:
    """Block and Lyapunov analysis of a model over a chain; returns a JSON-ready dict (numpy values).

    ``points``: chain states per step (first trajectories) where block norms are measured; ``exact``: full
    Jacobian (None: when d <= 1024) or ``probes`` probes per block. ``clip_x0``: the rollout clamps the x0
    estimate to [-clip_x0, clip_x0] ("auto": 1.0 for pifskit checkpoints, else info['clip_x0']; None: no
    clamp), and so does the step map whose Lyapunov spectrum is computed; block norms are those of the
    unclamped D_t.
    """
    info = model_info(info)
    shape = info["sample_shape"]
    d = int(np.prod(shape))
    k = check_positive_int(k, "k")
    if k > d:
        raise PifsError(f"k = {k} exceeds the dimension d = {d}; k must lie in [1, {d}]")
    M = check_positive_int(trajectories, "trajectories")
    points = min(check_positive_int(points, "points"), M)
    partition = Partition.patches(shape, patch) if len(shape) == 3 else Partition.tokens(shape)
    dtype = torch.float64 if float64 else torch.float32
    cd = make_denoiser(model, info, chain, schedule, dtype)  # checks the output shape on every call
    exact = d <= EXACT_MAX_DIM if exact is None else bool(exact)
    gen = torch.Generator().manual_seed(seed)
    x_init = torch.randn((M,) + shape, generator=gen, dtype=dtype)
    N = chain.n_steps
    if clip_x0 == "auto":
        clip_x0 = info.get("clip_x0", 1.0 if "data" in info else None)
    clip_x0 = None if clip_x0 is None else float(clip_x0)
    xs = rollout(cd, x_init, chain, clip_x0=clip_x0)
    if not torch.isfinite(xs).all():
        raise PifsError("the chain produced non-finite states with this model (check prediction type / schedule)")

    LB, LB_F, Moff, LB_spread = _measure_blocks(cd, xs, partition, points, exact, probes, gen, progress)
    lstar = contraction_threshold(chain)
    c, dcoef = step_coefficients(chain)
    levels = chain.logsnr[:-1]
    surrogate = _surrogate(spectrum, shape, levels, patch)

    # the map the sampler runs: the same clamp as the rollout (its Jacobian is 0 where the clamp is active)
    step = cd.step if clip_x0 is None else (lambda v, i: cd.step(v, i, clip_x0=clip_x0))
    num = lyapunov_spectrum(step, N, x_init, k, refine=refine, generator=gen, progress=None).to_dict()
    result: dict[str, Any] = {
        "model": {k_: v for k_, v in info.items() if isinstance(v, (str, int, float, bool, list, tuple))},
        "chain": chain.to_dict(), "d": d, "clip_x0": clip_x0, "patch": int(patch), "n_blocks": partition.n_blocks,
        "dtype": "float64" if float64 else "float32",
        "block_norms_method": "exact" if exact else f"probe estimate ({probes} probes per block, Frobenius)",
        "steps": {"logsnr": levels, "c": c, "d": dcoef, "contraction_threshold": lstar,
                  "block_max": LB, "block_max_spread": LB_spread, "block_max_frob": LB_F,
                  "contractive": (LB < lstar) if exact else (LB_F < lstar), "offdiag_mass": Moff,
                  **{f"surrogate_{k_}": v for k_, v in surrogate.items()}},
        "regime_boundary_step": regime_boundary_step(chain),
        "numerical": num,
    }
    if spectrum is not None:
        if spectrum.d != d:
            result["analytic_note"] = f"spectrum has d = {spectrum.d}, the model d = {d}: analytic values not comparable"
        ana = np.sort(lyapunov_exponents(chain, spectrum))[::-1]
        result["analytic"] = {"spectrum": spectrum.name, "d": spectrum.d, "exponents_top": ana[:k],
                              "kaplan_yorke": kaplan_yorke(ana), "kaplan_yorke_top_k": kaplan_yorke(ana[:k])}
    return result

def numerical_lyapunov(schedule, chain: Chain, spectrum: Spectrum, *, k: int | None = None, trajectories: int = 2,
                     model: str | None = None, float64: bool = False, method: str = "krylov",
                     tol: float | None = None, oversample: int | None = None, max_matvecs: int | None = None,
                     refine: int = 3, seed: int = 0) -> dict:
    """The numerical spectrum as a dict with the analytic command's keys (less the header), plus
    spread, k, and the Krylov diagnostics (error_bound, exponent_converged, converged, matvecs, clusters)."""
    dtype = torch.float64 if float64 else torch.float32
    gen = torch.Generator().manual_seed(int(seed))
    M = check_positive_int(trajectories, "trajectories")
    if model:
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
        raise PifsError(f"k = {k} exceeds the dimension d = {d}; k must lie in [1, {d}]")
    x = torch.randn((M,) + tuple(shape), generator=gen, dtype=dtype)
    opts = (dict(tol=tol, oversample=oversample, max_matvecs=max_matvecs) if method == "krylov"
            else dict(refine=0 if k == d else int(refine)))
    res = lyapunov_spectrum(cd.step, chain.n_steps, x, k, method=method, generator=gen, **opts)
    ex, info = res.exponents, res.to_dict()
    out = {"d": d, "model": label, "k": k, "trajectories": M, "dtype": "float64" if float64 else "float32",
           "numerical_method": method, "exponents": ex, "spread": res.spread, "converged": res.converged,
           "kaplan_yorke": res.kaplan_yorke, "kaplan_yorke_spread": info["kaplan_yorke_spread"],
           "kaplan_yorke_is_lower_bound": res.ky_is_lower_bound, "n_positive": int(np.count_nonzero(ex > 0)),
           "exponent_sum": float(ex.sum())}
    out.update({key: info[key] for key in ("error_bound", "exponent_converged", "tol", "matvecs", "jvps", "vjps",
                                           "basis_size", "block", "clusters", "cut_in_cluster", "next_exponent")
                if key in info})
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
