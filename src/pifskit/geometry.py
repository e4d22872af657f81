"""Model-free PIFS geometry of a DDIM chain (theory sections 2-4), vectorised over steps and lambda.

A step from level t (noisier) to s (cleaner) in angle form: phi = atan(s/a), Delta = phi_t - phi_s
(computed from the logSNR difference without cancellation, exact at tiny steps and at the ends),
phi_bar = (phi_t + phi_s)/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from ._validate import PifsError, as_float_array
from .chains import Chain


@dataclass(frozen=True)
class StepAngles:
    """Per-step angles (arrays of length N)."""

    phi_t: np.ndarray
    phi_s: np.ndarray
    delta: np.ndarray

    @property
    def phi_bar(self) -> np.ndarray:
        return self.phi_s + 0.5 * self.delta


def step_angles(chain: Chain) -> StepAngles:
    """phi_t, phi_s and Delta = phi_t - phi_s for each step, Delta without cancellation.

    With x = exp(-l/2) (VE sigma): Delta = atan((x_t - x_s) / (1 + x_t x_s)) and
    x_t - x_s = -x_t expm1(-(l_s - l_t)/2).
    """
    l = chain.logsnr
    lt, ls = l[:-1], l[1:]
    phi = chain.phi
    phi_t, phi_s = phi[:-1], phi[1:]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        xt = np.exp(-0.5 * lt)
        xs = np.exp(-0.5 * ls)
        diff = -xt * np.expm1(-0.5 * (ls - lt))
        delta = np.arctan2(diff, 1.0 + xt * xs)
    # pure-noise source (x_t = inf) or clean target (x_s = 0, l_s = inf): direct difference is exact
    bad = ~np.isfinite(delta) | np.isinf(lt) | np.isinf(ls)
    delta = np.where(bad, phi_t - phi_s, delta)
    return StepAngles(phi_t, phi_s, delta)


def step_coefficients(chain: Chain) -> tuple[np.ndarray, np.ndarray]:
    """(c_t, d_t) of F_t(x) = c_t x + d_t D_t(x): c = sin(phi_s)/sin(phi_t), d = sin(Delta)/sin(phi_t)."""
    ang = step_angles(chain)
    sin_t = np.sin(ang.phi_t)
    return np.sin(ang.phi_s) / sin_t, np.sin(ang.delta) / sin_t


def contraction_threshold(chain: Chain) -> np.ndarray:
    """L*_t = (1 - c_t) / d_t = cos(phi_bar) / cos(Delta/2).

    A final step to the clean endpoint has c = 0, d = 1 and L* = 1 exactly.
    """
    ang = step_angles(chain)
    return np.cos(ang.phi_bar) / np.cos(0.5 * ang.delta)


def expansion_threshold(chain: Chain) -> np.ndarray:
    """lambda*_t = tan(phi_t) / tan(phi_bar) (inf for a pure-noise source)."""
    ang = step_angles(chain)
    with np.errstate(divide="ignore", over="ignore"):
        tt = np.where(ang.phi_t >= np.pi / 2, np.inf, np.tan(ang.phi_t))
        return tt / np.tan(ang.phi_bar)


def _lam(lam) -> np.ndarray:
    lam = np.atleast_1d(as_float_array(lam, "lambda", allow_inf=True))
    if (lam < 0).any():
        raise PifsError("eigenvalues (lambda) must be >= 0")
    return lam


def denoiser_gain(logsnr, lam) -> np.ndarray:
    """Gaussian-optimal denoiser gain g(lambda) = a lambda / (a^2 lambda + s^2), broadcast (levels x lambda)."""
    l = np.atleast_1d(np.asarray(logsnr, dtype=np.float64))[..., None]
    lam = _lam(lam)
    a2, s2 = expit(l), expit(-l)
    with np.errstate(invalid="ignore"):
        g = np.sqrt(a2) * lam / (a2 * lam + s2)
    # lambda = inf: g = 1/a
    return np.where(np.isinf(lam), 1.0 / np.sqrt(a2), g)


def expansion_function(chain: Chain, lam) -> np.ndarray:
    """f_t(lambda) = (a_s a_t lambda + s_s s_t) / (a_t^2 lambda + s_t^2), shape (N, len(lambda)).

    No cancellation: numerator and denominator are sums of non-negative terms.
    """
    lam = _lam(lam)
    a, s = chain.a, chain.s
    at, as_, st, ss = a[:-1], a[1:], s[:-1], s[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.multiply.outer(as_ * at, lam)
        num += (ss * st)[:, None]
        den = np.multiply.outer(at * at, lam)
        den += (st * st)[:, None]
        np.divide(num, den, out=num)
        inf = np.isinf(lam)
        if inf.any():  # lambda = inf: f = a_s / a_t (full release)
            num[:, inf] = (as_ / at)[:, None]
    return num


def log_expansion_function(chain: Chain, lam) -> np.ndarray:
    """log f_t(lambda), shape (N, len(lambda)); -inf where f = 0 (lambda = 0 on a final clean step)."""
    f = expansion_function(chain, lam)
    with np.errstate(divide="ignore"):
        return np.log(f, out=f)


def chain_exponent(chain: Chain, lam) -> np.ndarray:
    """Lambda(lambda) = sum over steps of log f_t(lambda) (increasing in lambda)."""
    return log_expansion_function(chain, lam).sum(axis=0)


def global_threshold(chain: Chain) -> float:
    """lambda**: the root of Lambda(lambda) = 0 (nan if Lambda has no sign change).

    Directions with variance above lambda** are expanded by the whole chain.
    Continuum limit with a pure-noise start and a clean end: lambda** = 1.
    """
    lo_val = chain_exponent(chain, [0.0])[0]
    hi_val = chain_exponent(chain, [np.inf])[0]
    if not (lo_val < 0 < hi_val):
        return float("nan")

    def fn(u: float) -> float:
        return float(chain_exponent(chain, [np.exp(u)])[0])

    # bracket the root in u = log(lambda), within lambda in [1e-300, 1e300]
    lo, hi = -1.0, 1.0
    while fn(lo) > 0:
        lo *= 2
        if lo < -690:
            return float("nan")
    while fn(hi) < 0:
        hi *= 2
        if hi > 690:
            return float("nan")
    if not (np.isfinite(fn(lo)) and np.isfinite(fn(hi))):
        return float("nan")
    return float(np.exp(brentq(fn, lo, hi, xtol=1e-14, rtol=1e-14)))


def release_logsnr(lam) -> np.ndarray:
    """l_rel(lambda) = -log(lambda): where the denoiser's gain a g crosses 1/2."""
    lam = _lam(lam)
    with np.errstate(divide="ignore"):
        return -np.log(lam)


def release_step(chain: Chain, lam) -> np.ndarray:
    """Index of the step during which each lambda is released (-1: before the chain, N: never).

    Step i covers logSNR (l_i, l_{i+1}]; the release happens in step i when
    l_i < -log(lambda) <= l_{i+1}.
    """
    lr = release_logsnr(lam)
    return np.searchsorted(chain.logsnr, lr, side="left") - 1


def regime_boundary_step(chain: Chain) -> int:
    """First low-noise step: the number of steps whose mid-angle phi_bar exceeds pi/4 (logSNR < 0).

    Steps [0, boundary) are the high-noise regime (global assembly), steps
    [boundary, N) the low-noise regime (patch-by-patch detail).
    """
    phibar = step_angles(chain).phi_bar
    return int(np.count_nonzero(phibar > np.pi / 4))


def lambda_grid(n: int = 4096, lo: float = 1e-6, hi: float = 1e6) -> np.ndarray:
    """A log-spaced lambda grid for f_t maps and Lambda curves."""
    return np.logspace(np.log10(lo), np.log10(hi), n)


def local_rate(logsnr, lam) -> np.ndarray:
    """Continuum Lyapunov rate per unit logSNR: r(l, lambda) = (1/2)[sigmoid(l + log lambda) - sigmoid(l)].

    It is d/dl of (1/2) log(a^2 lambda + s^2); positive iff lambda > 1.
    """
    l = np.asarray(logsnr, dtype=np.float64)[..., None]
    lam = _lam(lam)
    with np.errstate(divide="ignore"):
        return 0.5 * (expit(l + np.log(lam)) - expit(l))
