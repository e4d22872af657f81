"""Fit exact-score data models to data rows (images in [-1, 1], flattened; high-dimensional data first reduced by
:func:`pca_reduce`): a Gaussian, a mixture per class, or a mixture by EM. A singular covariance raises
:class:`PifsError` unless ``jitter`` > 0 is passed, naturally the dequantisation variance bin^2 / 12.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validate import PifsError, as_float_array, check_positive_int
from .gaussian import GaussianModel
from .mixture import GaussianMixtureModel


def dequantization_variance(levels: int, lo: float = -1.0, hi: float = 1.0) -> float:
    """Variance of uniform dequantisation noise for ``levels`` evenly spaced values in [lo, hi]: bin^2 / 12."""
    levels = check_positive_int(levels, "levels")
    if levels < 2:
        raise PifsError("need at least 2 quantisation levels")
    return ((hi - lo) / (levels - 1)) ** 2 / 12.0


#: digits pixels take 17 values (0..16) -> bin 0.125 in [-1, 1]
DIGITS_JITTER = dequantization_variance(17)
#: 8-bit images -> bin 2/255 in [-1, 1]
MNIST_JITTER = dequantization_variance(256)


def _rows(X, name: str = "data", min_rows: int = 2) -> np.ndarray:
    X = as_float_array(X, name)
    if X.ndim < 2:
        raise PifsError(f"{name} must be an (n, d) array of rows, got shape {X.shape}")
    if X.shape[0] < min_rows or X.size == 0:  # (rows >= 1 and size 0: a zero dimension)
        raise PifsError(f"{name} is empty or too small: need >= {min_rows} rows of dimension >= 1, got {X.shape}")
    return X.reshape(X.shape[0], -1)


@dataclass(frozen=True)
class PCA:
    """x ~ mean + z @ components (components: dim x D, orthonormal rows); explained variances descending."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    def transform(self, X) -> np.ndarray:
        return (_rows(X, "data", 1) - self.mean) @ self.components.T


def pca_reduce(X, dim: int) -> tuple[np.ndarray, PCA]:
    """(Z, pca): the data's coordinates in its top ``dim`` principal directions (thin SVD of centred data)."""
    X = _rows(X)
    dim = check_positive_int(dim, "PCA dimension", maximum=min(X.shape))
    mean = X.mean(axis=0)
    _, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    pca = PCA(mean, Vt[:dim].copy(), S[:dim] ** 2 / (X.shape[0] - 1))
    return pca.transform(X), pca


def fit_gaussian(X, jitter: float = 0.0, name: str = "gaussian fit") -> GaussianModel:
    """N(sample mean, sample covariance + jitter I)."""
    X = _rows(X)
    return GaussianModel.from_covariance(X.mean(axis=0), np.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1]),
                                         jitter=jitter, name=name)


def fit_mixture_per_class(X, labels, jitter: float = 0.0, name: str = "gmm per class") -> GaussianMixtureModel:
    """One component per label: weight = class frequency, sample mean, sample covariance + jitter I."""
    X = _rows(X)
    y = np.asarray(labels)
    if y.shape != (X.shape[0],):
        raise PifsError(f"labels must have shape ({X.shape[0]},) to match the data, got {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        raise PifsError(f"every class needs >= 2 samples to estimate a covariance; class {classes[counts < 2][0]!r} "
                        f"has {counts.min()}")
    means = np.array([X[y == c].mean(axis=0) for c in classes])
    covs = np.array([np.cov(X[y == c], rowvar=False).reshape(X.shape[1], X.shape[1]) for c in classes])
    model = GaussianMixtureModel.from_covariances(counts / counts.sum(), means, covs, jitter=jitter, name=name)
    model.labels = classes  # type: ignore[attr-defined]
    return model


def fit_mixture_em(X, n_components: int, jitter: float = 1e-6, seed: int = 0, max_iter: int = 200,
                   name: str = "gmm em") -> GaussianMixtureModel:
    """EM fit with scikit-learn's ``GaussianMixture`` (full covariances, ``reg_covar = jitter``)."""
    X = _rows(X)
    K = check_positive_int(n_components, "number of components", maximum=X.shape[0])
    if not (np.isfinite(jitter) and jitter >= 0):
        raise PifsError(f"jitter must be a finite number >= 0, got {jitter}")
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError:  # pragma: no cover - optional extra
        raise PifsError("EM fitting needs scikit-learn: pip install 'pifskit[data]'") from None
    gm = GaussianMixture(K, covariance_type="full", reg_covar=jitter, random_state=seed, max_iter=max_iter)
    try:
        gm.fit(X)
    except ValueError as exc:  # sklearn: "Fitting the mixture model failed because some components have ill-defined
        raise PifsError(f"EM fit failed ({exc}); increase jitter") from None
    return GaussianMixtureModel.from_covariances(gm.weights_, gm.means_, gm.covariances_, name=name)


def mnist_data(path: str | Path, subset: str = "all", verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST IDX files (raw or .gz) in the directory ``path`` (or the directory of a file in it):
    (N x 784 in [-1, 1], labels). Nothing downloads."""
    from ..datasets import load_mnist

    p = Path(path)
    return load_mnist(p.parent if p.is_file() else p, subset=subset, verify=verify).rows()
