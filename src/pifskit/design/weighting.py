"""Criterion II, error-sensitivity weighting of the training loss (theory section 6 II).

An x0 error at logSNR l reaches the sample along direction lambda with squared gain sigmoid(l + log lambda);
over the data spectrum W(l) = E_lambda[sigmoid(l + log lambda)] (one variance: a soft min(SNR, gamma),
gamma = 1 / lambda, i.e. Min-SNR-gamma). Normalised by the mean eigenvalue lambda_bar:

    w_x0 = W / lambda_bar,   w_eps = W / (SNR lambda_bar),   w_v = W / ((SNR + 1) lambda_bar)

(Min-SNR: min(SNR, gamma), min(SNR, gamma) / SNR, min(SNR, gamma) / (SNR + 1)). Effective gamma: 1 / lambda_bar,
and ``gamma_fit``, the single-variance curve sigmoid(l - log gamma) closest to W(l) / W(inf).
See docs/design.md#ii-error-sensitivity-weighting-the-loss-weights-and-min-snrs-gamma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from .._validate import PifsError, as_float_array
from ..schedules import DiscreteSchedule, Schedule
from ..parameterization import short_prediction
from ..spectra import IMAGENET_STD, Spectrum
from ._binning import DEFAULT_MAX_BINS, compress_spectrum

PREDICTIONS = ("eps", "x0", "v")


def pixel_variance_from_std(stds, data_range: float = 1.0) -> float:
    """Mean per-pixel variance in [-1, 1] units from channel stds measured on a [0, data_range] scale.

    ImageNet (0.229, 0.224, 0.225) in [0, 1] -> mean((2 std)^2) = 0.2043.
    """
    s = as_float_array(stds, "channel stds", ndim=1)
    if s.size == 0 or (s <= 0).any():
        raise PifsError("channel stds must be positive")
    if not data_range > 0:
        raise PifsError("data range must be > 0")
    return float(np.mean((2.0 * s / data_range) ** 2))


def _groups(spectrum: Spectrum, max_bins: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(lam, share of each group, mean eigenvalue lambda_bar, share of the positive eigenvalues)."""
    lam, count, _ = compress_spectrum(spectrum, max_bins)
    share = float(np.count_nonzero(spectrum.eigenvalues > 0)) / spectrum.d
    return lam, count / count.sum(), float(spectrum.eigenvalues.mean()), share


def sensitivity(logsnr, spectrum: Spectrum, max_bins: int = DEFAULT_MAX_BINS) -> np.ndarray:
    """W(l) = E_lambda[sigmoid(l + log lambda)] (zero eigenvalues contribute 0); l may be +-inf."""
    l = as_float_array(logsnr, "logsnr", allow_inf=True)
    lam, p, _, share = _groups(spectrum, max_bins)  # zero eigenvalues: sigmoid(-inf) = 0, only their share matters
    with np.errstate(invalid="ignore"):
        x = l[..., None] + np.log(lam)
    x = np.where(np.isnan(x), 0.0, x)
    return share * (expit(x) @ p)


def _eps_factor(logsnr: np.ndarray, spectrum: Spectrum, max_bins: int) -> np.ndarray:
    """E[lambda / (1 + SNR lambda)] / lambda_bar = W / (SNR lambda_bar), stable at SNR = 0 and inf."""
    lam, p, lbar, share = _groups(spectrum, max_bins)
    with np.errstate(over="ignore"):
        snr = np.exp(logsnr)[..., None]
        val = lam / (1.0 + snr * lam)
    return share * (val @ p) / lbar


def loss_weights(logsnr, spectrum: Spectrum, prediction: str = "eps", max_bins: int = DEFAULT_MAX_BINS) -> np.ndarray:
    """Per-level loss weights (eps / x0 / v units), normalised so w_eps -> 1 at pure noise. See module doc."""
    prediction = short_prediction(prediction, ("epsilon", "sample", "v_prediction"))
    l = as_float_array(logsnr, "logsnr", allow_inf=True)
    lbar = float(spectrum.eigenvalues.mean())
    if prediction == "x0":
        return sensitivity(l, spectrum, max_bins) / lbar
    if prediction == "eps":
        return _eps_factor(l, spectrum, max_bins)
    # v: W / ((SNR + 1) lbar) = W sigmoid(-l) / lbar
    return sensitivity(l, spectrum, max_bins) * expit(-l) / lbar


def min_snr_weights(logsnr, gamma: float = 5.0, prediction: str = "eps") -> np.ndarray:
    """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) in x0 units, converted to eps / v units."""
    prediction = short_prediction(prediction, ("epsilon", "sample", "v_prediction"))
    if not (np.isfinite(gamma) and gamma > 0):
        raise PifsError(f"gamma must be > 0, got {gamma}")
    l = as_float_array(logsnr, "logsnr", allow_inf=True)
    with np.errstate(over="ignore"):
        snr = np.exp(l)
    if prediction == "x0":
        return np.minimum(snr, gamma)
    if prediction == "eps":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(snr > gamma, gamma / snr, 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(snr > gamma, gamma * expit(-l), snr / (snr + 1.0))


def effective_gamma(spectrum: Spectrum) -> float:
    """gamma = 1 / lambda_bar, lambda_bar the mean eigenvalue (per-pixel variance)."""
    return float(1.0 / spectrum.eigenvalues.mean())


def fitted_gamma(spectrum: Spectrum, logsnr_range: tuple[float, float] = (-20.0, 20.0), n: int = 801,
                 max_bins: int = DEFAULT_MAX_BINS) -> float:
    """gamma of the soft-min curve sigmoid(l - log gamma) closest to W(l) / W(inf) (least squares in l)."""
    lo, hi = logsnr_range
    if not hi > lo:
        raise PifsError("logsnr range must be increasing")
    l = np.linspace(lo, hi, n)
    W = sensitivity(l, spectrum, max_bins)
    W = W / float(sensitivity(np.array([np.inf]), spectrum, max_bins)[0])

    def err(lg: float) -> float:
        return float(np.sum((W - expit(l - lg)) ** 2))

    res = minimize_scalar(err, bounds=(lo - 10, hi + 10), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(res.x))


@dataclass(frozen=True)
class WeightingDesign:
    """Per-training-timestep weights for a discrete schedule (index = training timestep)."""

    weights: np.ndarray           # the chosen prediction type
    weights_x0: np.ndarray
    weights_eps: np.ndarray
    weights_v: np.ndarray
    min_snr: np.ndarray           # Min-SNR-gamma weights in the chosen units (gamma = gamma_published)
    logsnr: np.ndarray
    gamma: float                  # 1 / mean eigenvalue
    gamma_fit: float
    pixel_variance: float
    prediction: str
    gamma_published: float = 5.0

    def to_dict(self) -> dict:
        return {
            "gamma": self.gamma,
            "gamma_fit": self.gamma_fit,
            "gamma_published": self.gamma_published,
            "pixel_variance": self.pixel_variance,
            "prediction": self.prediction,
            "weights": self.weights.tolist(),
            "weights_x0": self.weights_x0.tolist(),
            "weights_eps": self.weights_eps.tolist(),
            "weights_v": self.weights_v.tolist(),
            "min_snr_weights": self.min_snr.tolist(),
            "logsnr": self.logsnr.tolist(),
        }


def design_weighting(schedule: Schedule, spectrum: Spectrum, prediction: str = "eps", gamma_published: float = 5.0,
                     num_train_timesteps: int = 1000, max_bins: int = DEFAULT_MAX_BINS) -> WeightingDesign:
    """Loss weights at every training timestep of ``schedule`` (a discrete one, or a continuous one sampled at
    t = (n + 1) / T), with gamma and the Min-SNR comparison curve."""
    prediction = short_prediction(prediction, ("epsilon", "sample", "v_prediction"))
    if isinstance(schedule, DiscreteSchedule):
        l = schedule.logsnr_table
    elif isinstance(schedule, Schedule):
        T = int(num_train_timesteps)
        if T < 1:
            raise PifsError("num_train_timesteps must be >= 1")
        l = schedule.logsnr((np.arange(T) + 1.0) / T)
    else:
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    w = {p: loss_weights(l, spectrum, p, max_bins) for p in PREDICTIONS}
    return WeightingDesign(weights=w[prediction], weights_x0=w["x0"], weights_eps=w["eps"], weights_v=w["v"],
                           min_snr=min_snr_weights(l, gamma_published, prediction), logsnr=l,
                           gamma=effective_gamma(spectrum), gamma_fit=fitted_gamma(spectrum, max_bins=max_bins),
                           pixel_variance=float(spectrum.eigenvalues.mean()), prediction=prediction,
                           gamma_published=float(gamma_published))
