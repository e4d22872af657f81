"""Gaussian data model x0 ~ N(mu, Sigma), Sigma = U diag(lam) U^T + iso (I - U U^T), with its exact denoiser.

U: d x k orthonormal columns (``basis=None``: U = I, a diagonal Gaussian). For VP x_t = a x0 + s e,

    D(x) = mu + a Sigma (a^2 Sigma + s^2 I)^-1 (x - a mu)
         = mu + U diag(g(lam)) U^T (x - a mu) + g(iso) (I - U U^T)(x - a mu),   g(lam) = a lam / (a^2 lam + s^2),

and the Jacobian is the constant matrix U diag(g) U^T + g(iso) (I - U U^T).
"""

from __future__ import annotations

import numpy as np

from .._validate import PifsError, as_float_array
from ._common import ExactModel, check_basis, check_batch, eigh_psd, level


def gain(a: float, s: float, lam) -> np.ndarray:
    """g = a lam / (a^2 lam + s^2); 0 where lam = 0 (also at s = 0, the continuous limit in s)."""
    lam = np.asarray(lam, dtype=np.float64)
    den = a * a * lam + s * s
    with np.errstate(invalid="ignore", divide="ignore"):
        g = a * lam / den
    return np.where(den > 0, g, 0.0)


class GaussianModel(ExactModel):
    """N(mu, U diag(lam) U^T + iso (I - U U^T)) with exact denoiser, Jacobian and sampler."""

    def __init__(self, mean, eigenvalues, basis=None, iso: float = 0.0, name: str = "gaussian"):
        mu = as_float_array(mean, "mean", ndim=1)
        d = mu.size
        if d == 0:
            raise PifsError("mean is empty (dimension 0)")
        lam = as_float_array(eigenvalues, "eigenvalues", ndim=1)
        if (lam < 0).any():
            raise PifsError(f"eigenvalues must be >= 0 (a covariance is PSD); min {lam.min():.3g}")
        if basis is None:
            if lam.size != d:
                raise PifsError(f"a diagonal Gaussian needs d = {d} eigenvalues, got {lam.size}")
            U = None
        else:
            U = check_basis(basis, d)
            if U.shape[1] != lam.size:
                raise PifsError(f"basis has {U.shape[1]} columns but {lam.size} eigenvalues were given")
        if not (np.isfinite(iso) and iso >= 0):
            raise PifsError(f"iso variance must be finite and >= 0, got {iso}")
        self.mean, self.eigenvalues, self.basis, self.iso, self.name = mu, lam, U, float(iso), name
        self.d = d

    @classmethod
    def from_covariance(cls, mean, cov, jitter: float = 0.0, name: str = "gaussian") -> "GaussianModel":
        """From a dense covariance (+ jitter I). Non-PSD -> PifsError; singular is allowed (a degenerate
        Gaussian has a well-defined denoiser at every s > 0; its KL is infinite)."""
        mu = as_float_array(mean, "mean", ndim=1)
        lam, U = eigh_psd(cov, "covariance", jitter=jitter, allow_singular=True, d=mu.size)
        return cls(mu, lam, U, name=name)

    @classmethod
    def low_rank(cls, mean, factors, iso: float, name: str = "low-rank gaussian") -> "GaussianModel":
        """Sigma = W W^T + iso I with W = ``factors`` (d x r): eigenpairs from the thin SVD of W."""
        mu = as_float_array(mean, "mean", ndim=1)
        W = as_float_array(factors, "factors", ndim=2)
        if W.shape[0] != mu.size:
            raise PifsError(f"factors must have {mu.size} rows (the dimension), got shape {W.shape}")
        if not (np.isfinite(iso) and iso >= 0):
            raise PifsError(f"iso variance must be finite and >= 0, got {iso}")
        U, S, _ = np.linalg.svd(W, full_matrices=False)
        return cls(mu, S**2 + iso, U, iso=iso, name=name)

    @classmethod
    def diagonal(cls, eigenvalues, mean=None, name: str = "diagonal gaussian") -> "GaussianModel":
        lam = as_float_array(eigenvalues, "eigenvalues", ndim=1)
        return cls(np.zeros(lam.size) if mean is None else mean, lam, None, name=name)

    def eigen_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(variances (d,), mean coordinates (d,)) in an orthonormal eigenbasis of Sigma.

        The first k coordinates are U^T mu with variances lam; the complement (d - k directions of
        variance iso) holds the part of mu orthogonal to U along one direction, zeros elsewhere.
        """
        if self.basis is None:
            return self.eigenvalues.copy(), self.mean.copy()
        k = self.basis.shape[1]
        m_in = self.basis.T @ self.mean
        var = np.concatenate([self.eigenvalues, np.full(self.d - k, self.iso)])
        mean = np.zeros(self.d)
        mean[:k] = m_in
        if k < self.d:
            mean[k] = np.linalg.norm(self.mean - self.basis @ m_in)
        return var, mean

    def covariance(self) -> np.ndarray:
        """Dense d x d covariance (for small d)."""
        if self.basis is None:
            return np.diag(self.eigenvalues)
        U = self.basis
        return (U * self.eigenvalues) @ U.T + self.iso * (np.eye(self.d) - U @ U.T)

    def denoise(self, x, logsnr) -> np.ndarray:
        """D(x) = mu + U diag(g(lam)) U^T (x - a mu) + g(iso)(I - U U^T)(x - a mu), batch (B, d)."""
        x = check_batch(x, self.d)
        a, s = level(logsnr)
        xc = x - a * self.mean
        g = gain(a, s, self.eigenvalues)
        if self.basis is None:
            return self.mean + xc * g
        gi = float(gain(a, s, self.iso))
        y = xc @ self.basis
        return self.mean + gi * xc + (y * (g - gi)) @ self.basis.T

    __call__ = denoise

    def jacobian(self, x=None, logsnr=0.0) -> np.ndarray:
        """dD/dx (d x d, the same at every x) = U diag(g) U^T + g(iso)(I - U U^T)."""
        a, s = level(logsnr)
        g = gain(a, s, self.eigenvalues)
        if self.basis is None:
            return np.diag(g)
        gi = float(gain(a, s, self.iso))
        U = self.basis
        return gi * np.eye(self.d) + (U * (g - gi)) @ U.T

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws of x0, shape (n, d)."""
        if n < 1:
            raise PifsError(f"number of samples must be >= 1, got {n}")
        rng = np.random.default_rng(rng)
        if self.basis is None:
            return self.mean + rng.standard_normal((n, self.d)) * np.sqrt(self.eigenvalues)
        U = self.basis
        z = rng.standard_normal((n, U.shape[1]))
        out = self.mean + (z * np.sqrt(self.eigenvalues)) @ U.T
        if self.iso > 0 and U.shape[1] < self.d:
            w = rng.standard_normal((n, self.d))
            out += np.sqrt(self.iso) * (w - (w @ U) @ U.T)
        return out

    def __repr__(self) -> str:
        k = self.d if self.basis is None else self.basis.shape[1]
        return f"GaussianModel(name={self.name!r}, d={self.d}, k={k}, iso={self.iso:g})"
