"""Sample-quality metrics against exact data models (docs/benchmarks.md#sampling-benchmark-exact-score-data-models).

Gaussian data: every sampler's output is Gaussian in closed form (:func:`gaussian_output_moments`), scored by
W2 and KL. Mixtures (Monte Carlo against fresh true samples): sliced W2, unbiased MMD^2, mode coverage, each
with a normal-approximation bootstrap interval (all replicates computed together). Feature sets: the Frechet
distance of Gaussian fits and k-NN precision / recall (the classifier is :mod:`pifskit.torch.quality`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._validate import PifsError, as_float_array, check_choice, check_positive_int
from .chains import Chain
from .exact_models.gaussian import GaussianModel
from .exact_models.mixture import GaussianMixtureModel


@dataclass(frozen=True)
class MetricValue:
    """A metric estimate with a confidence interval (equal to the value for closed forms)."""

    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def _exact(v: float) -> MetricValue:
    return MetricValue(float(v), float(v), float(v))


def bootstrap_counts(rng: np.random.Generator, n: int, n_boot: int, sets: int = 1) -> np.ndarray:
    """Multiplicities (n_boot, sets, n) of ``n_boot * sets`` resamples of n rows with replacement.

    Row b, set j holds ``bincount(rng.integers(0, n, n))`` of the (b * sets + j)-th draw: the stream is
    the one of that many sequential ``rng.integers(0, n, n)`` calls, drawn in one call.
    """
    m = check_positive_int(n_boot, "n_boot") * sets
    idx = rng.integers(0, n, (m, n))
    idx += np.arange(m)[:, None] * n
    return np.bincount(idx.ravel(), minlength=m * n).reshape(n_boot, sets, n)


def ci_from_replicates(estimate: float, replicates, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval estimate -/+ z_{(1+level)/2} * sd(replicates) (ddof = 1)."""
    from scipy.stats import norm

    if not (0 < level < 1):
        raise PifsError(f"confidence level must lie in (0, 1), got {level}")
    reps = np.asarray(replicates, dtype=np.float64)
    half = float(norm.ppf(0.5 + 0.5 * level) * reps.std(ddof=1)) if reps.size > 1 else 0.0
    return float(estimate - half), float(estimate + half)


class _ProbeNoise:
    """Noise source for probing: call j returns ones in row 2 + j, zeros elsewhere."""

    calls = 0

    def standard_normal(self, size) -> np.ndarray:
        z = np.zeros(size)
        row = 2 + self.calls
        if row >= size[0]:
            raise PifsError("sampler drew noise more than once per step; cannot probe its covariance")
        z[row] = 1.0
        self.calls += 1
        return z


@dataclass(frozen=True)
class GaussianOutput:
    """Sampler output N(mean, diag(var)) and the data N(data_mean, diag(data_var)), in eigen-coordinates."""

    mean: np.ndarray
    var: np.ndarray
    data_mean: np.ndarray
    data_var: np.ndarray


def gaussian_output_moments(model: GaussianModel, sampler: Callable, chain: Chain, start: str = "prior",
                            **opts) -> GaussianOutput:
    """Exact mean and variance of the sampler's output per eigen-direction of the Gaussian ``model``.

    The sampler is then affine and diagonal: out = b + M x_T + sum_i n_i z_i, so m = b + M m_T and
    v = M^2 v_T + sum_i n_i^2, with b, M, n_i read off by probing (x_T = 0 / 1, one unit noise draw per
    step). start: 'prior' (x_T ~ N(0, I)) or 'marginal' (x_T ~ N(a_T mu, a_T^2 lam + s_T^2)).
    """
    if not isinstance(model, GaussianModel):
        raise PifsError("closed-form output moments need a GaussianModel")
    check_choice(start, "start distribution", ("prior", "marginal"))
    lam, mu = model.eigen_coordinates()
    diag = GaussianModel.diagonal(lam, mu)
    N, d = chain.n_steps, lam.size
    x = np.zeros((2 + N, d))
    x[1] = 1.0
    probe = _ProbeNoise()
    out = sampler(diag.denoise, x, chain, rng=probe, **opts)
    b, M, n = out[0], out[1] - out[0], out[2:] - out[0]
    n = n[: probe.calls]
    a_T, s_T = float(chain.a[0]), float(chain.s[0])
    m_T, v_T = (np.zeros(d), np.ones(d)) if start == "prior" else (a_T * mu, a_T**2 * lam + s_T**2)
    return GaussianOutput(b + M * m_T, M**2 * v_T + (n**2).sum(axis=0), mu, lam)


def gaussian_w2(out: GaussianOutput) -> float:
    """W2 = sqrt(||m - mu||^2 + sum (sqrt v - sqrt lam)^2) (commuting covariances)."""
    return float(np.sqrt(((out.mean - out.data_mean) ** 2).sum()
                         + ((np.sqrt(out.var) - np.sqrt(out.data_var)) ** 2).sum()))


def gaussian_kl(out: GaussianOutput) -> float:
    """KL(sampler || data) = 1/2 sum [v/lam - 1 - log(v/lam) + (m - mu)^2 / lam] (inf if some lam = 0 < v)."""
    v, lam = out.var, out.data_var
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = v / lam
        term = ratio - 1.0 - np.log(ratio) + (out.mean - out.data_mean) ** 2 / lam
    both_zero = (v == 0) & (lam == 0) & (out.mean == out.data_mean)
    term = np.where(both_zero, 0.0, term)
    if np.isnan(term).any() or (lam == 0).any() and not both_zero[lam == 0].all():
        return float("inf")
    return float(0.5 * term.sum())


def _eigen_project(model: GaussianModel, X: np.ndarray) -> np.ndarray:
    if model.basis is None:
        return X
    if model.basis.shape[1] != model.d:
        raise PifsError("Monte-Carlo moments need a full eigenbasis (k = d)")
    return X @ model.basis


def gaussian_moments_from_samples(model: GaussianModel, X) -> GaussianOutput:
    """Empirical mean and variance of samples X per eigen-direction of ``model`` (the MC counterpart)."""
    X = as_float_array(X, "samples", ndim=2)
    if X.shape[0] < 2 or X.shape[1] != model.d:
        raise PifsError(f"samples must be (n >= 2, {model.d}), got {X.shape}")
    Y = _eigen_project(model, X)
    lam, mu = model.eigen_coordinates()
    return GaussianOutput(Y.mean(axis=0), Y.var(axis=0, ddof=1), mu, lam)


def gaussian_w2_from_samples(model: GaussianModel, X, n_boot: int = 200, rng=None, level: float = 0.95) -> MetricValue:
    """Monte-Carlo W2 between the samples' Gaussian fit (in the model's eigenbasis) and the model, bootstrap CI."""
    Y = _eigen_project(model, as_float_array(X, "samples", ndim=2))
    lam, mu = model.eigen_coordinates()

    def w2(Z):
        return gaussian_w2(GaussianOutput(Z.mean(axis=0), Z.var(axis=0, ddof=1), mu, lam))

    est = w2(Y)
    idx = np.random.default_rng(rng).integers(0, Y.shape[0], (check_positive_int(n_boot, "n_boot"), Y.shape[0]))
    return MetricValue(est, *ci_from_replicates(est, [w2(Y[i]) for i in idx], level))


def principal_axes_w2(X, reference) -> float:
    """W2 between the Gaussian fits of X and of ``reference`` taken diagonal in the reference's principal axes
    (the commuting form of :func:`gaussian_w2`): sqrt(||m_X - m_R||^2 + sum_i (sqrt(u_i' C_X u_i) - sqrt(lam_i))^2),
    (lam_i, u_i) the nonzero eigenpairs of the reference's sample covariance (at most n - 1 of them).

    A law-level distance from few samples in high dimension: X = a permutation of the reference rows, or any map
    that keeps the mean and the variance along every u_i, scores 0, while shrinkage toward the mean is charged
    in full -- unlike the paired distances ||x_b - r_b||, which also charge errors that keep the law (the coupling
    by rows bounds the W2: W2^2 <= n/(n-1) mean_b ||x_b - r_b||^2)."""
    X, R = _pair(X, reference)
    R0 = R - R.mean(axis=0)
    _, s, Vt = np.linalg.svd(R0, full_matrices=False)
    U = Vt[s > max(s[0], np.finfo(float).tiny) * 1e-10]
    proj = (X - X.mean(axis=0)) @ U.T
    return gaussian_w2(GaussianOutput(X.mean(axis=0), (proj**2).sum(axis=0) / (X.shape[0] - 1),
                                      R.mean(axis=0), ((R0 @ U.T) ** 2).sum(axis=0) / (R.shape[0] - 1)))


def _pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = as_float_array(X, "samples", ndim=2)
    Y = as_float_array(Y, "reference samples", ndim=2)
    if X.shape[0] < 2 or Y.shape[0] < 2:
        raise PifsError(f"need >= 2 samples in each set, got {X.shape[0]} and {Y.shape[0]}")
    if X.shape[1] != Y.shape[1]:
        raise PifsError(f"sample dimensions differ: {X.shape[1]} vs {Y.shape[1]}")
    return X, Y


class SlicedW2Reference:
    """A reference set Y prepared once for many sliced-W2 comparisons with the same projections and resamples.

    Draws from ``rng`` (in this order) the unit projections P (d x L) and the bootstrap multiplicities
    (``n_boot`` x 2 x n: one resample of the compared set's rows, one of Y's, per replicate), so the
    replicates of two compared sets are paired (:func:`paired_difference`). ``cache_bytes``: Y's resampled
    sorted slices are kept between comparisons when they fit.
    """

    def __init__(self, Y, n_projections: int = 128, n_boot: int = 100, rng=None, *, cache_bytes: int = 128 << 20):
        Y = as_float_array(Y, "reference samples", ndim=2)
        if Y.shape[0] < 2:
            raise PifsError(f"need >= 2 samples in each set, got {Y.shape[0]}")
        rng = np.random.default_rng(rng)
        self.n, self.dim = Y.shape
        P = rng.standard_normal((self.dim, check_positive_int(n_projections, "n_projections")))
        P /= np.linalg.norm(P, axis=0)
        self.P = P
        self.counts = bootstrap_counts(rng, self.n, n_boot, 2)
        self._sy, self._oy = _sorted_slices(Y, P)
        self._cache: list[np.ndarray] | None = None
        if self.counts.shape[0] * self._sy.size * 8 <= cache_bytes:
            self._cache = [np.repeat(self._sy, c[self._oy].ravel()) for c in self.counts[:, 1]]

    def _y_replicate(self, b: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[b]
        return np.repeat(self._sy, self.counts[b, 1][self._oy].ravel())

    def compare(self, X) -> tuple[float, np.ndarray]:
        """(SW2(X, Y), its n_boot bootstrap replicates); X must have Y's shape."""
        X = as_float_array(X, "samples", ndim=2)
        if X.shape[1] != self.dim:
            raise PifsError(f"sample dimensions differ: {X.shape[1]} vs {self.dim}")
        if X.shape[0] != self.n:
            raise PifsError(f"need {self.n} samples to compare with this reference, got {X.shape[0]}")
        sx, ox = _sorted_slices(X, self.P)
        est = float(np.sqrt(np.mean((sx - self._sy) ** 2)))
        reps = np.empty(self.counts.shape[0])
        for b, c in enumerate(self.counts[:, 0]):  # a resample of a sorted column = np.repeat, no re-sort
            dlt = np.repeat(sx, c[ox].ravel()) - self._y_replicate(b)
            reps[b] = np.sqrt(np.dot(dlt, dlt) / dlt.size)
        return est, reps


def _sorted_slices(Z: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All slices at once: projections Z @ P sorted per column -> (sorted values flat (L*n,), order (L, n))."""
    pz = Z @ P
    o = np.argsort(pz, axis=0)
    return np.take_along_axis(pz, o, 0).T.ravel(), np.ascontiguousarray(o.T)


def sliced_w2_replicates(X, Y, n_projections: int = 128, n_boot: int = 100, rng=None) -> tuple[float, np.ndarray]:
    """(sliced W2 estimate, its bootstrap replicates): the numbers behind :func:`sliced_w2`'s interval."""
    X, Y = _pair(X, Y)
    n = min(X.shape[0], Y.shape[0])
    return SlicedW2Reference(Y[:n], n_projections, n_boot, rng).compare(X[:n])


def sliced_w2(X, Y, n_projections: int = 128, n_boot: int = 100, rng=None, level: float = 0.95) -> MetricValue:
    """Sliced W2: sqrt(mean over random unit directions u of W2^2(u.X, u.Y)), 1-D W2 by sorted quantiles.

    Sets of unequal size are cut to the smaller size (first rows). The projections are drawn once
    from ``rng``; the CI resamples the rows of both sets (normal-approximation bootstrap).
    """
    est, reps = sliced_w2_replicates(X, Y, n_projections, n_boot, rng)
    return MetricValue(est, *ci_from_replicates(est, reps, level))


def paired_difference(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray], level: float = 0.95) -> MetricValue:
    """est_a - est_b with the interval of the replicate differences (replicates made on the same resamples)."""
    (ea, ra), (eb, rb) = a, b
    ra, rb = np.asarray(ra, np.float64), np.asarray(rb, np.float64)
    if ra.shape != rb.shape:
        raise PifsError(f"paired replicates must have the same shape, got {ra.shape} and {rb.shape}")
    est = float(ea - eb)
    return MetricValue(est, *ci_from_replicates(est, ra - rb, level))


def sliced_w2_difference(Xa, Xb, Y, n_projections: int = 128, n_boot: int = 100, rng=None,
                         level: float = 0.95) -> MetricValue:
    """Paired difference SW2(Xa, Y) - SW2(Xb, Y) for sample sets whose rows are paired (the same x_T).

    The bootstrap resamples the row pairs of (Xa, Xb) jointly and Y independently, so the noise
    shared by both sets cancels: the interval is much narrower than the two separate ones.
    """
    Xa, Y = _pair(Xa, Y)
    Xb, _ = _pair(Xb, Y)
    if Xa.shape != Xb.shape:
        raise PifsError(f"paired sample sets must have the same shape, got {Xa.shape} and {Xb.shape}")
    n = min(Xa.shape[0], Y.shape[0])
    ref = SlicedW2Reference(Y[:n], n_projections, n_boot, rng)
    return paired_difference(ref.compare(Xa[:n]), ref.compare(Xb[:n]), level)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ||a_i - b_j||^2 (clipped at 0)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def median_bandwidth(Z, max_points: int = 1000, rng=None) -> float:
    """Median heuristic: the median pairwise Euclidean distance (on at most ``max_points`` rows)."""
    Z = np.asarray(Z, dtype=np.float64)
    rng = np.random.default_rng(rng)
    if Z.shape[0] > max_points:
        Z = Z[rng.choice(Z.shape[0], max_points, replace=False)]
    med = float(np.sqrt(np.median(_sqdist(Z, Z)[np.triu_indices(Z.shape[0], 1)])))
    if not med > 0:
        raise PifsError("median heuristic bandwidth is 0 (all samples identical)")
    return med


def _gauss_kernel(A, B, h):
    return np.exp(-_sqdist(A, B) / (2 * h * h))


def mmd2_unbiased(X, Y, bandwidth: float | None = None, max_n: int = 1000, n_boot: int = 100, rng=None,
                  level: float = 0.95) -> MetricValue:
    """Unbiased MMD^2 (Gretton et al. 2012, equal sizes n): mean over i != j of
    h_ij = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i), k(x, y) = exp(-||x - y||^2 / (2 h^2)),
    h by the median heuristic on the pooled samples unless given. Uses the first min(n_x, n_y, max_n)
    rows of each set. CI: bootstrap over indices, excluding pairs drawn from the same index.
    """
    X, Y = _pair(X, Y)
    n = min(X.shape[0], Y.shape[0], check_positive_int(max_n, "max_n"))
    X, Y = X[:n], Y[:n]
    rng = np.random.default_rng(rng)
    h = median_bandwidth(np.vstack([X, Y]), rng=rng) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise PifsError(f"MMD bandwidth must be > 0, got {h}")
    Kxy = _gauss_kernel(X, Y, h)
    H = _gauss_kernel(X, X, h) + _gauss_kernel(Y, Y, h) - Kxy - Kxy.T

    # a replicate with row multiplicities w: mean of H over the ordered pairs of distinct draws,
    # (w'Hw - sum_i w_i^2 H_ii) / (n^2 - sum_i w_i^2); all replicates in one product
    est = float(H[~np.eye(n, dtype=bool)].mean())
    W = bootstrap_counts(rng, n, n_boot)[:, 0].astype(np.float64)
    W2 = W * W
    reps = (np.einsum("bi,bi->b", W @ H, W) - W2 @ np.diag(H)) / (n * n - W2.sum(axis=1))
    return MetricValue(est, *ci_from_replicates(est, reps, level))


def mode_coverage(model: GaussianMixtureModel, X, n_boot: int = 200, rng=None, level: float = 0.95
                  ) -> tuple[MetricValue, np.ndarray]:
    """(TV distance between the posterior mass per component, mean_x p(k | x), and the true weights; the masses)."""
    if not isinstance(model, GaussianMixtureModel):
        raise PifsError("mode coverage needs a GaussianMixtureModel")
    X = as_float_array(X, "samples", ndim=2)
    if X.shape[0] < 1 or X.shape[1] != model.d:
        raise PifsError(f"samples must be (n >= 1, {model.d}), got {X.shape}")
    R = model.responsibilities(X, np.inf)
    rng = np.random.default_rng(rng)

    est = float(0.5 * np.abs(R.mean(axis=0) - model.weights).sum())
    W = bootstrap_counts(rng, R.shape[0], n_boot)[:, 0].astype(np.float64)
    reps = 0.5 * np.abs(W @ R / R.shape[0] - model.weights).sum(axis=1)
    return MetricValue(est, *ci_from_replicates(est, reps, level)), R.mean(axis=0)


def _feats(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise PifsError(f"{name} must be (N >= 2, D) features, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise PifsError(f"{name} contains non-finite values")
    return a


def _psd_sqrt(C: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(0.5 * (C + C.T))
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """``||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^{1/2} C_b C_a^{1/2})^{1/2})`` (symmetric PSD route)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    Ca, Cb = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or Ca.shape != Cb.shape or Ca.shape != (mu_a.size, mu_a.size):
        raise PifsError("means and covariances must have matching shapes (D,), (D, D)")
    sa = _psd_sqrt(Ca)
    w = np.linalg.eigvalsh(sa @ Cb @ sa)
    cross = np.sqrt(np.clip(w, 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(Ca) + np.trace(Cb) - 2.0 * cross)


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets."""
    a, b = _feats(feats_a, "feats_a"), _feats(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise PifsError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = _sqdist(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]  # squared distance to the k-th other point


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` with k-NN manifolds (Kynkaenniemi et al. 2019)."""
    r, f = _feats(real, "real"), _feats(fake, "fake")
    k = check_positive_int(k, "k")
    if k >= min(len(r), len(f)):
        raise PifsError(f"k = {k} needs more than k points in each set ({len(r)} real, {len(f)} fake)")
    rr, rf = _knn_radii(r, k), _knn_radii(f, k)
    d = _sqdist(f, r)  # (fake, real)
    precision = float(np.mean((d <= rr[None]).any(1)))
    recall = float(np.mean((d.T <= rf[None]).any(1)))
    return precision, recall
