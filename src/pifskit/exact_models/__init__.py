"""Exact-score data models: Gaussians and Gaussian mixtures with closed-form denoisers.

For VP noising x_t = a x0 + s e (a = sqrt(sigmoid(l)), s = sqrt(sigmoid(-l)))
the optimal denoiser E[x0 | x_t] of these models is available in closed form,
so samplers and schedules can be scored against the truth without a trained
network. Every model exposes ``denoise(x, logsnr)`` (vectorised over a batch
``x`` of shape (B, d)), ``jacobian(x, logsnr)`` and ``sample(n, rng)``.
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
