"""Helpers shared by the data models: noise-level coefficients, batch and covariance checks, noisy sampling."""

from __future__ import annotations

import numpy as np

from .._validate import PifsError, as_float_array
from ..schedules import a_from_logsnr, s_from_logsnr

#: relative tolerance below which a negative eigenvalue counts as round-off (else: not PSD)
PSD_RTOL = 1e-10
#: tolerance for ||U^T U - I||_max of a basis
ORTHO_TOL = 1e-6


def level(logsnr) -> tuple[float, float]:
    """(a, s) = (sqrt(sigmoid(l)), sqrt(sigmoid(-l))) of one noise level; l = -inf (noise) and +inf (clean) allowed."""
    l = np.asarray(logsnr, dtype=np.float64)
    if l.ndim != 0:
        raise PifsError(f"logsnr must be a scalar (one noise level per call), got shape {l.shape}")
    if np.isnan(l):
        raise PifsError("logsnr is NaN")
    return float(a_from_logsnr(l)), float(s_from_logsnr(l))


def check_batch(x, d: int, name: str = "x") -> np.ndarray:
    """x as a float64 (B, d) array (a single (d,) vector is promoted to (1, d))."""
    arr = as_float_array(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != d:
        raise PifsError(f"{name} must have shape (B, {d}), got {np.shape(x)}")
    return arr


def check_basis(U, d: int, name: str = "basis") -> np.ndarray:
    """A d x k matrix with orthonormal columns."""
    U = as_float_array(U, name, ndim=2)
    if U.shape[0] != d or U.shape[1] > d:
        raise PifsError(f"{name} must be d x k with k <= d = {d}, got shape {U.shape}")
    err = np.abs(U.T @ U - np.eye(U.shape[1])).max() if U.size else 0.0
    if err > ORTHO_TOL:
        raise PifsError(f"{name} columns are not orthonormal (max |U^T U - I| = {err:.3g})")
    return U


def eigh_psd(cov, name: str = "covariance", jitter: float = 0.0, allow_singular: bool = False,
             d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, eigenvectors as columns) of a symmetric PSD matrix, plus ``jitter`` * I.

    Negative eigenvalues beyond round-off (``PSD_RTOL`` * largest) -> PifsError (not PSD);
    round-off negatives are clipped to 0. A zero eigenvalue (singular matrix) left after the
    jitter is an error unless ``allow_singular``.
    """
    C = as_float_array(cov, name, ndim=2)
    if C.shape[0] != C.shape[1] or (d is not None and C.shape[0] != d):
        raise PifsError(f"{name} must be square{'' if d is None else f' {d} x {d}'}, got shape {C.shape}")
    if C.shape[0] == 0:
        raise PifsError(f"{name} is empty")
    scale = max(float(np.abs(C).max()), 1e-300)
    if np.abs(C - C.T).max() > 1e-8 * scale:
        raise PifsError(f"{name} is not symmetric (max |C - C^T| = {np.abs(C - C.T).max():.3g})")
    if not (np.isfinite(jitter) and jitter >= 0):
        raise PifsError(f"jitter must be a finite number >= 0, got {jitter}")
    lam, U = np.linalg.eigh(0.5 * (C + C.T))
    lam, U = lam[::-1].copy(), U[:, ::-1].copy()
    tol = PSD_RTOL * max(float(np.abs(lam).max()), 1e-300) * C.shape[0]
    if lam[-1] < -tol:
        raise PifsError(f"{name} is not positive semi-definite (smallest eigenvalue {lam[-1]:.3g}); "
                        "pass a valid covariance")
    lam = np.clip(lam, 0.0, None) + jitter
    if not allow_singular and lam[-1] <= tol:
        raise PifsError(f"{name} is singular (smallest eigenvalue {lam[-1]:.3g}); pass jitter > 0 "
                        "(e.g. the data's quantisation variance) to regularise it")
    return lam, U


class ExactModel:
    """Base of the data models (dimension ``d``, ``sample(n, rng)``): the noisy marginal by sampling."""

    d: int

    def sample_noisy(self, n: int, logsnr, rng=None) -> np.ndarray:
        """n draws of x_t = a x0 + s e (the exact marginal at level ``logsnr``)."""
        rng = np.random.default_rng(rng)
        a, s = level(logsnr)
        return a * self.sample(n, rng) + s * rng.standard_normal((n, self.d))
