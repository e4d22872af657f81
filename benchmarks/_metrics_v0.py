"""Frozen copy of the pre-vectorisation mixture metrics (pifskit.metrics before the bootstrap rewrite).

Reference for benchmarks/bench_metrics.py only: per-replicate bootstrap loops, sliced W2 difference
re-projected per call. Not part of the package.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pifskit._validate import PifsError, as_float_array, check_positive_int
from pifskit.metrics import MetricValue


def bootstrap_ci(estimate: float, stat: Callable[[np.random.Generator], float], n_boot: int, rng,
                 level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation bootstrap interval: estimate -/+ z * sd of ``stat(rng)`` over ``n_boot`` replicates.

    Centred on the estimate on purpose: resampling with replacement duplicates points, which shifts
    distance-type statistics (sliced W2, TV) upward, so a percentile interval can miss the estimate.
    """
    from scipy.stats import norm

    if not (0 < level < 1):
        raise PifsError(f"confidence level must lie in (0, 1), got {level}")
    reps = np.array([stat(rng) for _ in range(check_positive_int(n_boot, "n_boot"))])
    half = float(norm.ppf(0.5 + 0.5 * level) * reps.std(ddof=1)) if reps.size > 1 else 0.0
    return float(estimate - half), float(estimate + half)


def _pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = as_float_array(X, "samples", ndim=2)
    Y = as_float_array(Y, "reference samples", ndim=2)
    if X.shape[0] < 2 or Y.shape[0] < 2:
        raise PifsError(f"need >= 2 samples in each set, got {X.shape[0]} and {Y.shape[0]}")
    if X.shape[1] != Y.shape[1]:
        raise PifsError(f"sample dimensions differ: {X.shape[1]} vs {Y.shape[1]}")
    return X, Y


def sliced_w2(X, Y, n_projections: int = 128, n_boot: int = 100, rng=None, level: float = 0.95) -> MetricValue:
    """Sliced W2: sqrt(mean over random unit directions u of W2^2(u.X, u.Y)), 1-D W2 by sorted quantiles.

    Sets of unequal size are cut to the smaller size (first rows). The projections are drawn once
    from ``rng``; the CI resamples the rows of both sets (percentile bootstrap).
    """
    X, Y = _pair(X, Y)
    n = min(X.shape[0], Y.shape[0])
    rng = np.random.default_rng(rng)
    P = rng.standard_normal((X.shape[1], check_positive_int(n_projections, "n_projections")))
    P /= np.linalg.norm(P, axis=0)
    px, py = X[:n] @ P, Y[:n] @ P

    # sort once; a bootstrap replicate of a sorted column is the sorted column with each value
    # repeated by its multiplicity in the resample (np.repeat), so no re-sorting is needed
    ox, oy = np.argsort(px, axis=0), np.argsort(py, axis=0)
    sx, sy = np.take_along_axis(px, ox, 0).T.ravel(), np.take_along_axis(py, oy, 0).T.ravel()
    ox_t, oy_t = ox.T, oy.T
    L = P.shape[1]

    def resorted(sorted_flat, order_t, r):
        counts = np.bincount(r.integers(0, n, n), minlength=n)
        return np.repeat(sorted_flat, counts[order_t].ravel()).reshape(L, n)

    def replicate(r):
        return float(np.sqrt(np.mean((resorted(sx, ox_t, r) - resorted(sy, oy_t, r)) ** 2)))

    est = float(np.sqrt(np.mean((sx - sy) ** 2)))
    lo, hi = bootstrap_ci(est, replicate, n_boot, rng, level)
    return MetricValue(est, lo, hi)


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
    rng = np.random.default_rng(rng)
    P = rng.standard_normal((Xa.shape[1], check_positive_int(n_projections, "n_projections")))
    P /= np.linalg.norm(P, axis=0)
    L = P.shape[1]
    sets = []
    for Z in (Xa[:n], Xb[:n], Y[:n]):
        pz = Z @ P
        o = np.argsort(pz, axis=0)
        sets.append((np.take_along_axis(pz, o, 0).T.ravel(), o.T))

    def resorted(k, counts):
        flat, order_t = sets[k]
        return np.repeat(flat, counts[order_t].ravel()).reshape(L, n)

    def diff(cx, cy):
        ry = resorted(2, cy)
        return float(np.sqrt(np.mean((resorted(0, cx) - ry) ** 2)) - np.sqrt(np.mean((resorted(1, cx) - ry) ** 2)))

    ones = np.ones(n, dtype=np.int64)
    est = diff(ones, ones)
    lo, hi = bootstrap_ci(est, lambda r: diff(np.bincount(r.integers(0, n, n), minlength=n),
                                              np.bincount(r.integers(0, n, n), minlength=n)), n_boot, rng, level)
    return MetricValue(est, lo, hi)


def median_bandwidth(Z, max_points: int = 1000, rng=None) -> float:
    """Median heuristic: the median pairwise Euclidean distance (on at most ``max_points`` rows)."""
    Z = np.asarray(Z, dtype=np.float64)
    rng = np.random.default_rng(rng)
    if Z.shape[0] > max_points:
        Z = Z[rng.choice(Z.shape[0], max_points, replace=False)]
    sq = (Z * Z).sum(axis=1)
    D2 = np.clip(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0.0, None)
    med = float(np.sqrt(np.median(D2[np.triu_indices(Z.shape[0], 1)])))
    if not med > 0:
        raise PifsError("median heuristic bandwidth is 0 (all samples identical)")
    return med


def _gauss_kernel(A, B, h):
    sa, sb = (A * A).sum(axis=1), (B * B).sum(axis=1)
    return np.exp(-np.clip(sa[:, None] + sb[None, :] - 2 * A @ B.T, 0.0, None) / (2 * h * h))


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

    def stat(idx):
        S = H[np.ix_(idx, idx)]
        same = idx[:, None] == idx[None, :]
        return float(S[~same].mean())

    est = stat(np.arange(n))
    lo, hi = bootstrap_ci(est, lambda r: stat(r.integers(0, n, n)), n_boot, rng, level)
    return MetricValue(est, lo, hi)


def mode_coverage(model, X, n_boot: int = 200, rng=None, level: float = 0.95
                  ) -> tuple[MetricValue, np.ndarray]:
    """(TV distance between the posterior mass per component, mean_x p(k | x), and the true weights; the masses)."""
    if not hasattr(model, "responsibilities"):
        raise PifsError("mode coverage needs a GaussianMixtureModel")
    X = as_float_array(X, "samples", ndim=2)
    if X.shape[0] < 1 or X.shape[1] != model.d:
        raise PifsError(f"samples must be (n >= 1, {model.d}), got {X.shape}")
    R = model.responsibilities(X, np.inf)
    rng = np.random.default_rng(rng)

    def tv(Rs):
        return float(0.5 * np.abs(Rs.mean(axis=0) - model.weights).sum())

    est = tv(R)
    lo, hi = bootstrap_ci(est, lambda r: tv(R[r.integers(0, R.shape[0], R.shape[0])]), n_boot, rng, level)
    return MetricValue(est, lo, hi), R.mean(axis=0)
