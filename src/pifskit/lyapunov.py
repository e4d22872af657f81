"""Analytic Lyapunov spectrum of the DDIM chain and its Kaplan-Yorke dimension (theory section 5).

Gaussian surrogate: Lambda_k = sum_t log f_t(lambda_k). Kaplan-Yorke dimension: the root of the Moran
equation P(D) = sum_{i <= floor(D)} Lambda_i + (D - floor(D)) Lambda_{floor(D)+1} = 0.
"""

from __future__ import annotations

import numpy as np

from ._validate import PifsError, as_float_array
from .chains import Chain
from .geometry import chain_exponent
from .spectra import Spectrum

#: largest dimension for which a numerical spectrum defaults to all k = d exponents
FULL_K_MAX = 512


def lyapunov_exponents(chain: Chain, spectrum: Spectrum) -> np.ndarray:
    """Lambda_k = sum_t log f_t(lambda_k), sorted descending (length d).

    Evaluated once per distinct eigenvalue (power-law spectra have few), then expanded.
    """
    vals, counts = spectrum.unique
    return np.repeat(chain_exponent(chain, vals), counts)


def _sorted_exponents(exponents) -> np.ndarray:
    ex = as_float_array(exponents, "exponents", ndim=1, allow_inf=True)
    if ex.size == 0:
        raise PifsError("exponents is empty")
    if (ex == np.inf).any():
        raise PifsError("exponents contain +inf")
    return np.sort(ex)[::-1]


def moran_function(exponents, D) -> np.ndarray:
    """P(D): the piecewise-linear singular-value function of the chain (vectorised in D)."""
    ex = _sorted_exponents(exponents)
    D = np.asarray(D, dtype=np.float64)
    if ((D < 0) | (D > ex.size)).any():
        raise PifsError(f"D must lie in [0, {ex.size}]")
    partial = np.concatenate([[0.0], np.cumsum(ex)])
    k = np.minimum(np.floor(D).astype(np.int64), ex.size - 1)
    frac = D - k
    nxt = np.concatenate([ex, [0.0]])[k]
    with np.errstate(invalid="ignore"):
        return partial[k] + np.where(frac > 0, frac * nxt, 0.0)


def kaplan_yorke(exponents) -> float:
    """Kaplan-Yorke dimension: the root of the discrete Moran equation P(D) = 0.

    Invariant to scaling all exponents by one positive factor.
    """
    ex = _sorted_exponents(exponents)
    partial = np.cumsum(ex)
    if ex[0] < 0:
        return 0.0
    if partial[-1] >= 0:
        return float(ex.size)
    k = int(np.flatnonzero(partial >= 0)[-1]) + 1  # number of exponents in the non-negative partial sum
    nxt = ex[k]
    if np.isinf(nxt):
        return float(k)
    return float(k + partial[k - 1] / abs(nxt))
