"""Criterion I, coarse end: the resolution shift of the noise schedule.

Direction lambda is released at logSNR -log(lambda); keeping the release of the spectrum's top at the same
t from resolution R0 to R shifts the logSNR by

    Delta l = -log(lambda_top(R) / lambda_top(R0)),   rectified flow: alpha = exp(-Delta l / 2),

(-2 log(R / R0) if lambda_top grows like the pixel count: simple diffusion's and SD3's rules).
``top``: the largest eigenvalue (1) or the geometric mean of the ``top`` largest.
See docs/design.md#i-release-alignment-coarse-end-the-resolution-shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import PifsError, check_positive_int
from ..schedules import RectifiedFlowSchedule, ShiftedCosineSchedule
from ..spectra import Spectrum, from_images_fourier, powerlaw


def top_variance(spectrum: Spectrum, top: int = 1) -> float:
    """Geometric mean of the ``top`` largest eigenvalues (the largest for top = 1)."""
    k = check_positive_int(top, "top")
    ev = spectrum.eigenvalues[:k]
    if ev.size < k:
        raise PifsError(f"spectrum has only {spectrum.d} eigenvalues, asked for the top {k}")
    if not (ev > 0).all():
        raise PifsError("top eigenvalues must be positive")
    return float(np.exp(np.mean(np.log(ev))))


def rectified_flow_alpha(logsnr_shift: float) -> float:
    """alpha = exp(-Delta l / 2): the rectified-flow timestep shift equal to a logSNR shift Delta l."""
    return float(np.exp(-0.5 * logsnr_shift))


def logsnr_shift_from_alpha(alpha: float) -> float:
    """Delta l = -2 log(alpha) (SD3's alpha = 3 is a logSNR shift of -2.197)."""
    if not alpha > 0:
        raise PifsError(f"alpha must be > 0, got {alpha}")
    return float(-2.0 * np.log(alpha))


def simple_diffusion_shift(resolution: int, base_resolution: int = 64) -> float:
    """Published rule 2 log(base / resolution) (Hoogeboom et al. 2023)."""
    R, R0 = check_positive_int(resolution, "resolution"), check_positive_int(base_resolution, "base resolution")
    return float(2.0 * np.log(R0 / R))


@dataclass(frozen=True)
class ShiftDesign:
    """Result of the shift criterion: logSNR shift and the equivalent rectified-flow alpha."""

    logsnr_shift: float
    timestep_shift: float           # rectified-flow alpha
    resolution: int
    base_resolution: int
    top: float                      # lambda_top(R)
    base_top: float                 # lambda_top(R0)
    idealised_logsnr_shift: float   # -2 log(R / R0)
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def idealised_timestep_shift(self) -> float:
        return rectified_flow_alpha(self.idealised_logsnr_shift)

    def shifted_cosine(self, logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> ShiftedCosineSchedule:
        """simple diffusion's cosine schedule shifted by the derived logSNR shift."""
        return ShiftedCosineSchedule(self.logsnr_shift, logsnr_min, logsnr_max)

    def rectified_flow(self) -> RectifiedFlowSchedule:
        """Rectified flow with the derived timestep shift alpha."""
        return RectifiedFlowSchedule(self.timestep_shift)

    def to_dict(self) -> dict:
        return {
            "logsnr_shift": self.logsnr_shift,
            "timestep_shift": self.timestep_shift,
            "resolution": self.resolution,
            "base_resolution": self.base_resolution,
            "top_variance": self.top,
            "base_top_variance": self.base_top,
            "top_ratio": self.top / self.base_top,
            "idealised_logsnr_shift": self.idealised_logsnr_shift,
            "idealised_timestep_shift": self.idealised_timestep_shift,
            "source": self.source,
            **self.meta,
        }


def shift_from_spectra(spectrum: Spectrum, base_spectrum: Spectrum, resolution: int, base_resolution: int,
                       top: int = 1, source: str = "spectra") -> ShiftDesign:
    """Delta l = -log(lambda_top(spectrum) / lambda_top(base_spectrum)); alpha = exp(-Delta l / 2)."""
    R, R0 = check_positive_int(resolution, "resolution"), check_positive_int(base_resolution, "base resolution")
    lt, l0 = top_variance(spectrum, top), top_variance(base_spectrum, top)
    dl = float(-np.log(lt / l0))
    return ShiftDesign(logsnr_shift=dl, timestep_shift=rectified_flow_alpha(dl), resolution=R, base_resolution=R0,
                       top=lt, base_top=l0, idealised_logsnr_shift=simple_diffusion_shift(R, R0), source=source,
                       meta={"spectrum": spectrum.name, "base_spectrum": base_spectrum.name, "top": int(top)})


def powerlaw_shift(resolution: int, base_resolution: int = 64, exponent: float = 2.0, channels: int = 3,
                   pixel_variance: float = 1.0, top: int = 1) -> ShiftDesign:
    """The shift the stationary power-law model (:func:`pifskit.spectra.powerlaw`) gives at fixed pixel variance.

    Channels are independent in the model, so ``channels`` does not change the shift.
    """
    R, R0 = check_positive_int(resolution, "resolution"), check_positive_int(base_resolution, "base resolution")
    sp = powerlaw(R, channels, exponent, pixel_variance)
    sp0 = powerlaw(R0, channels, exponent, pixel_variance)
    d = shift_from_spectra(sp, sp0, R, R0, top, source=f"powerlaw:{exponent:g}")
    return ShiftDesign(**{**d.__dict__, "meta": {**d.meta, "exponent": float(exponent), "channels": int(channels),
                                                  "pixel_variance": float(pixel_variance)}})


def downsample_images(images, factor: int) -> np.ndarray:
    """Box-filter (area) downsampling of n x C x H x W images by an integer factor (crops the remainder)."""
    X = np.asarray(images, dtype=np.float64)
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4:
        raise PifsError("images must be n x C x H x W (or n x H x W)")
    f = check_positive_int(factor, "downsampling factor")
    n, C, H, W = X.shape
    if H // f < 1 or W // f < 1:
        raise PifsError(f"cannot downsample {H}x{W} by {f}")
    X = X[:, :, : H // f * f, : W // f * f]
    return X.reshape(n, C, H // f, f, W // f, f).mean(axis=(3, 5))


def shift_from_images(images, base_factor: int, top: int = 1) -> ShiftDesign:
    """Measured shift between the images' native resolution R and R0 = R / base_factor (box downsampling).

    Uses the stationary Fourier spectrum (:func:`pifskit.spectra.from_images_fourier`) at both resolutions.
    """
    X = np.asarray(images, dtype=np.float64)
    if X.ndim == 3:
        X = X[:, None]
    f = check_positive_int(base_factor, "base factor")
    lo = downsample_images(X, f)
    hi = X[:, :, : lo.shape[2] * f, : lo.shape[3] * f]
    R, R0 = hi.shape[2], lo.shape[2]
    return shift_from_spectra(from_images_fourier(hi, name=f"images {R}"), from_images_fourier(lo, name=f"images {R0}"),
                              R, R0, top, source="images")
