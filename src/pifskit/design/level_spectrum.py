"""A per-level linear model of a denoiser: the input of the model-aware step design.

Per fixed direction k the gain depends on the level,

    D(y; sigma) = g_k(sigma) y,   g_k = lambda_k(sigma) / (lambda_k(sigma) + sigma^2),

with the effective variance lambda_k known at M levels and v_k = log lambda_k interpolated in u = log sigma by
monotone cubic pieces (PCHIP slopes, zero slope at the ends, constant outside): a constant measurement is
exactly the Gaussian. The target is the output std of the same model's exact flow,

    t_k = sqrt(lambda_k(sigma_1)) exp(1/2 int_{u_1}^{u_M} g_k(u) v_k'(u) du)   (Gauss-Legendre per interval).

See docs/design.md#iii-against-the-models-own-per-level-spectrum---model-issue-11-item-3b. numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from .._validate import PifsError, as_float_array

#: measured gains are clipped to [GAIN_CLIP, 1 - GAIN_CLIP] before the effective variance is taken
GAIN_CLIP = 1e-9
_GL = np.polynomial.legendre.leggauss(16)


@dataclass(frozen=True, eq=False)
class LevelSpectra:
    """Effective variances ``lam`` (M, K) of K directions (multiplicities ``count``) at VE levels ``sigmas`` (M,).

    ``source`` says where the values come from (model, basis, tail assumption); ``info`` holds the
    estimate's bookkeeping (model calls, seconds, rank, ...).
    """

    sigmas: np.ndarray
    lam: np.ndarray
    count: np.ndarray
    name: str = "level spectra"
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        s = as_float_array(self.sigmas, "levels", ndim=1)
        lam = np.asarray(self.lam, dtype=float)
        if lam.ndim == 1:
            lam = lam[None, :]
        cnt = as_float_array(self.count, "count", ndim=1)
        if lam.ndim != 2 or lam.shape[0] != s.size or lam.shape[1] != cnt.size:
            raise PifsError(f"level spectra: lam must be (levels, directions) = ({s.size}, {cnt.size}), "
                            f"got {np.shape(self.lam)}")
        if not np.isfinite(lam).all() or (lam <= 0).any():
            raise PifsError("level spectra: effective variances must be finite and > 0")
        if (s <= 0).any() or not np.isfinite(s).all():
            raise PifsError("level spectra: levels must be finite and > 0")
        if (cnt <= 0).any():
            raise PifsError("level spectra: counts must be > 0")
        order = np.argsort(s)
        s, lam = s[order], lam[order]
        if (np.diff(s) <= 0).any():
            raise PifsError("level spectra: levels must be distinct")
        u, v = np.log(s), np.log(lam)
        coef = None
        if s.size > 1:
            slopes = PchipInterpolator(u, v, axis=0).derivative()(u)
            slopes[0] = slopes[-1] = 0.0
            h = np.diff(u)[:, None]
            dv = np.diff(v, axis=0)
            # Hermite cubic on [u_j, u_{j+1}] in t = u - u_j: v_j + m_j t + c2 t^2 + c3 t^3
            c2 = (3 * dv / h - 2 * slopes[:-1] - slopes[1:]) / h
            c3 = (slopes[:-1] + slopes[1:] - 2 * dv / h) / h**2
            coef = (v[:-1], slopes[:-1], c2, c3)
        for key, val in {"sigmas": s, "lam": lam, "count": cnt, "_u": u, "_coef": coef}.items():
            object.__setattr__(self, key, val)
        object.__setattr__(self, "_target", self._target_std())

    @classmethod
    def constant(cls, lam, count=None, name: str = "constant") -> "LevelSpectra":
        """The Gaussian: one level, lambda_k(sigma) = lam_k for every sigma."""
        lam = as_float_array(lam, "eigenvalues", ndim=1)
        cnt = np.ones_like(lam) if count is None else count
        return cls(np.array([1.0]), lam[None, :], cnt, name=name, source="constant spectrum")

    @classmethod
    def from_gains(cls, sigmas, gains, count=None, **kw) -> "LevelSpectra":
        """From measured gains g (M, K) at levels ``sigmas``: lambda = sigma^2 g / (1 - g) (g clipped)."""
        s = as_float_array(sigmas, "levels", ndim=1)
        g = np.clip(np.asarray(gains, dtype=float), GAIN_CLIP, 1.0 - GAIN_CLIP)
        if g.ndim != 2 or g.shape[0] != s.size:
            raise PifsError(f"gains must be (levels, directions) with {s.size} levels, got {np.shape(gains)}")
        lam = s[:, None] ** 2 * np.exp(np.log(g) - np.log1p(-g))
        return cls(s, lam, np.ones(g.shape[1]) if count is None else count, **kw)

    @property
    def size(self) -> int:
        """Number of direction groups K."""
        return int(self.count.size)

    def log_variance(self, u):
        """v_k(u) = log lambda_k at u = log sigma; ``u`` (n, 1) real or complex -> (n, K)."""
        u = np.asarray(u)
        if self._coef is None:
            return np.broadcast_to(np.log(self.lam[0]), u.shape[:-1] + (self.size,)).copy()
        ur = np.real(u)
        inside = (ur > self._u[0]) & (ur < self._u[-1])
        # outside the range: constant (the imaginary part of u is dropped, so the complex-step derivative is 0)
        uc = np.where(inside, u, np.clip(ur, self._u[0], self._u[-1]))
        j = np.clip(np.searchsorted(self._u, np.real(uc), side="right") - 1, 0, self._u.size - 2)
        t = uc - self._u[j]
        v0, m, c2, c3 = (c[j[..., 0]] for c in self._coef)
        return v0 + t * (m + t * (c2 + t * c3))

    def variance(self, sigma):
        """lambda_k(sigma) for VE levels ``sigma`` (n, 1) (real > 0) -> (n, K)."""
        return np.exp(self.log_variance(np.log(np.asarray(sigma, dtype=float))))

    def gain(self, sigma):
        """g_k(sigma) = 1 / (1 + sigma^2 / lambda_k(sigma)) for ``sigma`` (n, 1) > 0, real or complex -> (n, K)."""
        s = np.asarray(sigma)
        with np.errstate(over="ignore", divide="ignore"):
            u = np.log(s)
            return 1.0 / (1.0 + np.exp(2.0 * u - self.log_variance(u)))

    def target_std(self) -> np.ndarray:
        """t_k: the output std of the exact flow of this linear model (see the module docstring)."""
        return self._target

    def _target_std(self) -> np.ndarray:
        v_lo = np.log(self.lam[0])
        if self._coef is None:
            return np.exp(0.5 * v_lo)
        x, w = _GL
        a, b = self._u[:-1], self._u[1:]
        h = (b - a)[:, None]
        uq = (a[:, None] + 0.5 * (x[None, :] + 1.0) * h).reshape(-1, 1)      # (n_int * 16, 1)
        v0, m, c2, c3 = self._coef
        jj = np.repeat(np.arange(a.size), x.size)
        t = uq - a[jj][:, None]
        dv = m[jj] + t * (2 * c2[jj] + 3 * t * c3[jj])                         # v'(u), (nq, K)
        g = 1.0 / (1.0 + np.exp(np.minimum(2.0 * uq - (v0[jj] + t * (m[jj] + t * (c2[jj] + t * c3[jj]))), 700.0)))
        wq = (0.5 * w[None, :] * h).reshape(-1, 1)
        return np.exp(0.5 * v_lo + 0.5 * np.sum(wq * g * dv, axis=0))

    def target_variance(self) -> np.ndarray:
        return self._target**2

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "levels": [float(s) for s in self.sigmas],
                "directions": self.size, "dimension": float(self.count.sum()), **self.info}

    def __repr__(self) -> str:
        return f"LevelSpectra(name={self.name!r}, levels={self.sigmas.size}, directions={self.size})"
