"""Gaussian mixture data model with the exact denoiser E[x0 | x_t].

p(x0) = sum_k w_k N(mu_k, Sigma_k), Sigma_k = U_k diag(lam_k) U_k^T (full eigen form,
lam_k > 0). Under VP noising x_t = a x0 + s e, component k's marginal is
N(a mu_k, C_k) with C_k = a^2 Sigma_k + s^2 I = U_k diag(v_k) U_k^T, v_k = a^2 lam_k + s^2, so

    r_k(x) = softmax_k( log w_k - 1/2 sum log v_k - 1/2 || U_k^T (x - a mu_k) ||^2_{v_k^-1} ),
    m_k(x) = mu_k + U_k diag(g_k) U_k^T (x - a mu_k),   g_k = a lam_k / v_k,
    D(x)   = sum_k r_k(x) m_k(x).

Responsibilities are computed in log space, stable at every level. Jacobian:

    dD/dx = sum_k r_k A_k + sum_k r_k (m_k - D) (score_k - score_bar)^T,
    A_k = U_k diag(g_k) U_k^T,  score_k = -C_k^-1 (x - a mu_k),  score_bar = sum_k r_k score_k.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from .._validate import PifsError, as_float_array
from ._common import ORTHO_TOL, ExactModel, check_batch, eigh_psd, level
from .gaussian import GaussianModel

#: rows of x processed at once: bounds the (rows, K, d) work arrays to ~32 MB
_CHUNK_ELEMS = 1 << 22


class GaussianMixtureModel(ExactModel):
    """sum_k w_k N(mu_k, U_k diag(lam_k) U_k^T): exact denoiser, Jacobian, sampler, responsibilities."""

    def __init__(self, weights, means, eigenvalues, bases, name: str = "gmm"):
        w = as_float_array(weights, "weights", ndim=1)
        mu = as_float_array(means, "means", ndim=2)
        lam = as_float_array(eigenvalues, "eigenvalues", ndim=2)
        U = as_float_array(bases, "bases", ndim=3)
        K = w.size
        if K == 0:
            raise PifsError("a mixture needs at least one component")
        if mu.shape[0] != K or lam.shape[0] != K or U.shape[0] != K:
            raise PifsError(f"weights ({K}), means ({mu.shape[0]}), eigenvalues ({lam.shape[0]}) and bases "
                            f"({U.shape[0]}) must have the same number of components")
        d = mu.shape[1]
        if d == 0:
            raise PifsError("means are empty (dimension 0)")
        if lam.shape != (K, d) or U.shape != (K, d, d):
            raise PifsError(f"eigenvalues must be (K, d) = ({K}, {d}) and bases (K, d, d); got {lam.shape}, {U.shape}")
        if (w <= 0).any():
            raise PifsError("mixture weights must be > 0 (drop empty components)")
        if abs(w.sum() - 1.0) > 1e-6:
            raise PifsError(f"mixture weights must sum to 1, got {w.sum():.8g}")
        if (lam <= 0).any():
            raise PifsError(f"component covariances must be positive definite (min eigenvalue {lam.min():.3g}); "
                            "build with from_covariances(..., jitter=...) to regularise singular ones")
        err = np.abs(np.einsum("kij,kil->kjl", U, U) - np.eye(d)).max()
        if err > ORTHO_TOL:
            raise PifsError(f"component bases are not orthonormal (max |U^T U - I| = {err:.3g})")
        self.weights, self.means, self.eigenvalues, self.bases = w / w.sum(), mu, lam, U
        self.name, self.K, self.d = name, K, d
        # stacked bases (d, K d) so both projections are one GEMM each
        self._U_all = np.ascontiguousarray(U.transpose(1, 0, 2).reshape(d, K * d))
        self._mu_proj = np.einsum("kdj,kd->kj", U, mu)  # U_k^T mu_k
        self._log_w = np.log(self.weights)

    @classmethod
    def from_covariances(cls, weights, means, covariances, jitter: float = 0.0,
                         name: str = "gmm") -> "GaussianMixtureModel":
        """From dense (K, d, d) covariances (+ jitter I each). Non-PSD or singular (without jitter) -> PifsError."""
        mu = as_float_array(means, "means", ndim=2)
        C = as_float_array(covariances, "covariances", ndim=3)
        if C.shape[0] != mu.shape[0]:
            raise PifsError(f"{mu.shape[0]} means but {C.shape[0]} covariances")
        eig = [eigh_psd(C[k], f"covariance of component {k}", jitter=jitter, d=mu.shape[1]) for k in range(len(C))]
        return cls(weights, mu, np.array([lam for lam, _ in eig]), np.array([U for _, U in eig]), name=name)

    @classmethod
    def from_gaussian(cls, g: GaussianModel) -> "GaussianMixtureModel":
        lam, U = eigh_psd(g.covariance(), "covariance")
        return cls([1.0], g.mean[None], lam[None], U[None], name=g.name)

    def _project(self, x: np.ndarray, a: float) -> np.ndarray:
        """y_k = U_k^T (x - a mu_k), shape (B, K, d)."""
        B = x.shape[0]
        return (x @ self._U_all).reshape(B, self.K, self.d) - a * self._mu_proj

    def _log_resp(self, y: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unnormalised log responsibilities (B, K): log w_k - 1/2 sum log v_k - 1/2 sum y^2 / v_k."""
        return self._log_w - 0.5 * np.log(v).sum(axis=1) - 0.5 * np.einsum("bkd,kd->bk", y * y, 1.0 / v)

    def _level(self, x, logsnr) -> tuple[np.ndarray, float, np.ndarray]:
        """(x as a (B, d) batch, a, the marginal variances v_k = a^2 lam_k + s^2 (K, d))."""
        x = check_batch(x, self.d)
        a, s = level(logsnr)
        return x, a, a * a * self.eigenvalues + s * s

    def _chunks(self, B: int):
        step = max(1, _CHUNK_ELEMS // (self.K * self.d))
        for i in range(0, B, step):
            yield slice(i, min(B, i + step))

    def responsibilities(self, x, logsnr) -> np.ndarray:
        """Posterior component probabilities p(k | x_t = x), shape (B, K) (logsnr = inf: of clean data)."""
        x, a, v = self._level(x, logsnr)
        out = np.empty((x.shape[0], self.K))
        for sl in self._chunks(x.shape[0]):
            out[sl] = softmax(self._log_resp(self._project(x[sl], a), v), axis=1)
        return out

    def log_prob(self, x, logsnr=np.inf) -> np.ndarray:
        """log density of x_t at level ``logsnr`` (default: the clean data density), shape (B,)."""
        x, a, v = self._level(x, logsnr)
        out = np.empty(x.shape[0])
        for sl in self._chunks(x.shape[0]):
            out[sl] = logsumexp(self._log_resp(self._project(x[sl], a), v), axis=1)
        return out - 0.5 * self.d * np.log(2 * np.pi)

    def denoise(self, x, logsnr) -> np.ndarray:
        """D(x) = sum_k r_k(x) [mu_k + U_k diag(g_k) U_k^T (x - a mu_k)], batch (B, d)."""
        x, a, v = self._level(x, logsnr)
        g = a * self.eigenvalues / v
        out = np.empty_like(x)
        for sl in self._chunks(x.shape[0]):
            y = self._project(x[sl], a)
            r = softmax(self._log_resp(y, v), axis=1)
            z = (r[:, :, None] * g) * y
            out[sl] = r @ self.means + z.reshape(z.shape[0], -1) @ self._U_all.T
        return out

    __call__ = denoise

    def jacobian(self, x, logsnr) -> np.ndarray:
        """dD/dx for each row of x, shape (B, d, d) (see the module docstring)."""
        x, a, v = self._level(x, logsnr)
        g = a * self.eigenvalues / v
        U = self.bases
        y = self._project(x, a)
        r = softmax(self._log_resp(y, v), axis=1)                       # (B, K)
        m = self.means[None] + np.einsum("kdj,bkj->bkd", U, g * y)      # (B, K, d)
        D = np.einsum("bk,bkd->bd", r, m)
        score = -np.einsum("kdj,bkj->bkd", U, y / v)                     # (B, K, d)
        score_bar = np.einsum("bk,bkd->bd", r, score)
        A = np.einsum("kdj,kj,kej->kde", U, g, U)                        # (K, d, d)
        J = np.einsum("bk,kde->bde", r, A)
        J += np.einsum("bk,bkd,bke->bde", r, m - D[:, None], score - score_bar[:, None])
        return J

    def sample(self, n: int, rng=None, return_labels: bool = False):
        """n draws of x0 (n, d) (and their component labels if ``return_labels``)."""
        if n < 1:
            raise PifsError(f"number of samples must be >= 1, got {n}")
        rng = np.random.default_rng(rng)
        labels = rng.choice(self.K, size=n, p=self.weights)
        z = rng.standard_normal((n, self.d)) * np.sqrt(self.eigenvalues[labels])
        x = np.empty_like(z)
        for k in range(self.K):
            x[labels == k] = self.means[k] + z[labels == k] @ self.bases[k].T
        return (x, labels) if return_labels else x

    def component(self, k: int) -> GaussianModel:
        """Component k as a :class:`GaussianModel`."""
        return GaussianModel(self.means[k], self.eigenvalues[k], self.bases[k], name=f"{self.name}[{k}]")

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance) of the whole mixture."""
        m = self.weights @ self.means
        C = np.einsum("k,kdj,kj,kej->de", self.weights, self.bases, self.eigenvalues, self.bases)
        dm = self.means - m
        return m, C + (self.weights[:, None] * dm).T @ dm

    def __repr__(self) -> str:
        return f"GaussianMixtureModel(name={self.name!r}, K={self.K}, d={self.d})"
