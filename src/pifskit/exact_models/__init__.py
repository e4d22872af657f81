"""Exact-score data models: Gaussians and Gaussian mixtures whose optimal denoiser E[x0 | x_t] under VP noising
x_t = a x0 + s e is closed-form. Each has ``denoise(x, logsnr)`` (batch (B, d)), ``jacobian`` and ``sample``.
"""

from .gaussian import GaussianModel
from .mixture import GaussianMixtureModel
from .fit import (
    fit_gaussian,
    fit_mixture_em,
    fit_mixture_per_class,
    mnist_data,
    pca_reduce,
)

__all__ = [
    "GaussianModel",
    "GaussianMixtureModel",
    "fit_gaussian",
    "fit_mixture_per_class",
    "fit_mixture_em",
    "mnist_data",
    "pca_reduce",
]
