"""Everything the report shows, computed once by the core into one dict (the content of ``report.json``)."""

from __future__ import annotations

import math

import numpy as np

from .. import __version__
from .._validate import check_positive_int
from ..blockmass import offdiag_block_mass, patch_overlap_weights
from ..chains import Chain
from ..geometry import (
    chain_exponent,
    contraction_threshold,
    expansion_threshold,
    global_threshold,
    log_expansion_function,
    regime_boundary_step,
    release_logsnr,
    release_step,
    step_coefficients,
)
from ..lyapunov import kaplan_yorke, lyapunov_exponents
from ..schedules import Schedule
from ..spectra import Spectrum

#: figures show eigenvalues down to DYNAMIC_RANGE * lambda_max (smaller ones are off scale, still in the JSON)
DYNAMIC_RANGE = 1e-8


def lambda_range(chain: Chain, spectrum: Spectrum, lam2: float) -> tuple[float, float]:
    """A log-lambda window covering the spectrum, the finite lambda*_t, lambda** and [1e-3, 1e3]."""
    ev = spectrum.eigenvalues[spectrum.eigenvalues > 0]
    ls = expansion_threshold(chain)
    # numerically-zero eigenvalues (PCA round-off) would stretch the axis over dozens of decades
    ev_lo = max(ev.min(), ev.max() * DYNAMIC_RANGE)
    pts = [1e-3, 1e3, ev_lo, ev.max(), *ls[np.isfinite(ls)]]
    if math.isfinite(lam2):
        pts.append(lam2)
    lo, hi = float(np.min(pts)), float(np.max(pts))
    return 10 ** (math.floor(math.log10(lo)) - 0.5), 10 ** (math.ceil(math.log10(hi)) + 0.5)


def _block_mass(spectrum: Spectrum, levels: np.ndarray, patch: int) -> dict:
    """The surrogate off-diagonal block mass M_off at the levels, or why it is not defined."""
    pg = spectrum.power_grid
    if pg is None:
        return {"available": False, "patch": patch, "image_shape": None, "n_patches": None, "M_off": None,
                "note": f"spectrum '{spectrum.name}' has no stationary power grid (H x W), so the surrogate "
                        "off-diagonal block mass M_off(t) is not defined; use a powerlaw spectrum or a Fourier "
                        "spectrum from images"}
    patch_overlap_weights(pg.shape, patch)  # validates that the patch tiles the image
    return {"available": True, "patch": patch, "image_shape": list(pg.shape), "n_patches": int(pg.size // patch**2),
            "M_off": offdiag_block_mass(levels, pg, patch), "note": None}


def compute_report_data(schedule: Schedule, chain: Chain, spectrum: Spectrum, *, patch: int = 8,
                        schedule_label: str | None = None, lambda_points: int = 256,
                        map_points: int = 96) -> dict:
    """The report's numbers as numpy/Python values (:func:`pifskit._json.to_jsonable` makes them JSON).

    Layout: ``inputs``, ``summary`` (the key numbers), ``chain`` (levels), ``steps`` (per step: c_t, d_t,
    L*_t = (1 - c_t)/d_t, lambda*_t, M_off, ...), ``curves`` (Lambda(lambda) = sum_t log f_t(lambda) on a
    grid), ``f_map`` (log f_t on a coarser grid), ``spectrum`` (distinct eigenvalues, multiplicities, release
    logSNR -log(lambda_k) and releasing step), ``lyapunov`` (exponents, Kaplan-Yorke dimension), ``block_mass``.
    """
    patch = check_positive_int(patch, "patch")
    lambda_points = check_positive_int(lambda_points, "lambda_points")
    map_points = check_positive_int(map_points, "map_points")
    N = chain.n_steps

    c, d = step_coefficients(chain)
    L_star = contraction_threshold(chain)
    lam_star = expansion_threshold(chain)
    lam2 = global_threshold(chain)
    boundary = regime_boundary_step(chain)
    a, ab, l = chain.a, chain.alpha_bar, chain.logsnr

    lo, hi = lambda_range(chain, spectrum, lam2)
    grid = np.logspace(math.log10(lo), math.log10(hi), lambda_points)
    Lam = chain_exponent(chain, grid)
    map_grid = np.logspace(math.log10(lo), math.log10(hi), map_points)
    log_f = log_expansion_function(chain, map_grid)

    vals, counts = spectrum.unique
    rel_l = release_logsnr(vals)
    rel_step = release_step(chain, vals)
    released = np.bincount(rel_step + 1, weights=counts, minlength=N + 2).astype(np.int64)
    # released[0]: at or before the first level; released[1 + i]: during step i; released[N + 1]: never

    ex = np.sort(lyapunov_exponents(chain, spectrum))[::-1]
    ky = kaplan_yorke(ex)

    bm = _block_mass(spectrum, l[:-1], patch)
    m_off = bm["M_off"]
    finite_ls = lam_star[np.isfinite(lam_star)]
    summary = {
        "n_steps": N, "lands_clean": chain.lands_clean, "starts_from_noise": chain.starts_from_noise,
        "alpha_bar_first": ab[0], "alpha_bar_last": ab[-1], "logsnr_first": l[0], "logsnr_last": l[-1],
        "L_star_first": L_star[0], "L_star_last": L_star[-1],
        "lambda_star_min": finite_ls.min() if finite_ls.size else math.inf,
        "lambda_star_max": finite_ls.max() if finite_ls.size else math.inf,
        "lambda_2star": lam2, "regime_boundary_step": boundary,
        "d": spectrum.d, "pixel_variance": spectrum.pixel_variance,
        "eigenvalue_max": vals[0], "eigenvalue_min": vals[-1],
        "n_above_lambda_2star": int(np.count_nonzero(spectrum.eigenvalues > lam2)) if math.isfinite(lam2) else None,
        "n_positive_exponents": int(np.count_nonzero(ex > 0)),
        "exponent_max": ex[0], "exponent_min": ex[-1], "exponent_sum": ex.sum(),
        "kaplan_yorke": ky, "kaplan_yorke_fraction": ky / spectrum.d,
        "released_before_chain": released[0], "released_never": released[-1],
        "M_off_first": None if m_off is None else m_off[0],
        "M_off_last": None if m_off is None else m_off[-1],
        "M_off_at_boundary": None if (m_off is None or boundary >= N) else m_off[boundary],
    }
    return {
        "pifskit_version": __version__,
        "inputs": {
            "schedule": schedule_label or getattr(schedule, "name", type(schedule).__name__),
            "schedule_class": type(schedule).__name__,
            "schedule_name": getattr(schedule, "name", None),
            "chain": chain.name,
            "spectrum": spectrum.name,
            "spectrum_meta": dict(spectrum.meta),
            "patch": patch,
        },
        "summary": summary,
        "chain": {**chain.to_dict(), "a": a, "s": chain.s, "phi": chain.phi},
        "steps": {
            "index": np.arange(N),
            "timestep": None if chain.timesteps is None else np.asarray(chain.timesteps),
            "logsnr_t": l[:-1], "logsnr_s": l[1:],
            "alpha_bar_t": ab[:-1], "alpha_bar_s": ab[1:],
            "a_t": a[:-1],
            "c": c, "d": d, "L_star": L_star, "lambda_star": lam_star,
            "regime": np.where(np.arange(N) < boundary, "high-noise", "low-noise").tolist(),
            "released": released[1:-1],
            "M_off": m_off,
        },
        "curves": {"lambda": grid, "Lambda": Lam, "continuum_Lambda": 0.5 * np.log(grid)},
        "f_map": {"lambda": map_grid, "log_f": log_f},
        "spectrum": {
            "name": spectrum.name, "d": spectrum.d, "channels": spectrum.channels,
            "eigenvalues_distinct": vals, "multiplicity": counts,
            "release_logsnr": rel_l, "release_step": rel_step,
        },
        "lyapunov": {"exponents": ex, "kaplan_yorke": ky},
        "block_mass": bm,
    }
