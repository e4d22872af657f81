"""Data spectra: the covariance eigenvalues lambda_k the geometry is evaluated on (power law, PCA of
data, Fourier estimate from images, a file, scikit-learn's digits), in training units (images in [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
import warnings
from pathlib import Path

import numpy as np

from ._validate import PifsError, as_float_array, check_positive_int

#: ImageNet's per-channel pixel std in [0, 1] units (torchvision's normalisation constants)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: mean per-pixel variance of ImageNet in [-1, 1] units: mean((2 std)^2) = 0.20432
IMAGENET_PIXEL_VARIANCE = float(np.mean((2.0 * np.asarray(IMAGENET_STD)) ** 2))


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Covariance eigenvalues, sorted descending.

    ``power_grid`` (H x W), when present, holds the per-channel variances of a
    stationary image model on the DFT frequency grid (numpy ``fft2`` order);
    the eigenvalues are then that grid repeated over ``channels``. It is what
    the off-diagonal block mass M_off needs.
    """

    eigenvalues: np.ndarray
    name: str = "spectrum"
    power_grid: np.ndarray | None = None
    channels: int = 1
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        ev = as_float_array(self.eigenvalues, "eigenvalues", ndim=1)
        if ev.size == 0:
            raise PifsError("spectrum is empty")
        if (ev < 0).any():
            raise PifsError(f"eigenvalues must be >= 0 (min {ev.min():.3g})")
        if not (ev > 0).any():
            raise PifsError("spectrum has no positive eigenvalue")
        object.__setattr__(self, "eigenvalues", np.sort(ev)[::-1].copy())

    @property
    def d(self) -> int:
        """Dimension (number of eigenvalues)."""
        return int(self.eigenvalues.size)

    @property
    def pixel_variance(self) -> float:
        """Mean eigenvalue = total variance / d."""
        return float(self.eigenvalues.mean())

    @cached_property
    def unique(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct eigenvalues descending, multiplicities): work on these, expand with ``np.repeat``."""
        vals, counts = np.unique(self.eigenvalues, return_counts=True)
        return vals[::-1].copy(), counts[::-1].copy()

    def to_dict(self) -> dict:
        return {"name": self.name, "d": self.d, "pixel_variance": self.pixel_variance,
                "eigenvalues": self.eigenvalues.tolist()}


def powerlaw_grid(resolution: int, exponent: float = 2.0, pixel_variance: float = 1.0) -> np.ndarray:
    """Stationary power-law variances on the R x R DFT grid: lambda(k) ~ |k|^-exponent.

    |k| is the integer wavenumber; the DC term uses |k| = 1 (the lowest
    frequency), so it never diverges. Normalised to mean ``pixel_variance``.
    """
    R = check_positive_int(resolution, "resolution")
    if not np.isfinite(exponent) or exponent < 0:
        raise PifsError(f"power-law exponent must be >= 0, got {exponent}")
    if not (np.isfinite(pixel_variance) and pixel_variance > 0):
        raise PifsError(f"pixel variance must be > 0, got {pixel_variance}")
    k = np.fft.fftfreq(R) * R
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    k2[0, 0] = 1.0
    grid = k2 ** (-0.5 * exponent)
    return grid * (pixel_variance / grid.mean())


def powerlaw(resolution: int = 64, channels: int = 3, exponent: float = 2.0, pixel_variance: float = 1.0) -> Spectrum:
    """Power-law image model: R x R x C, channels independent with the same spectrum."""
    C = check_positive_int(channels, "channels")
    grid = powerlaw_grid(resolution, exponent, pixel_variance)
    return Spectrum(np.tile(grid.ravel(), C), name=f"powerlaw:{exponent:g} {resolution}x{resolution}x{C}",
                    power_grid=grid, channels=C,
                    meta={"resolution": int(resolution), "exponent": float(exponent),
                          "pixel_variance": float(pixel_variance)})


def from_data(X, name: str = "data", k: int | None = None) -> Spectrum:
    """PCA eigenvalues of data rows X (n x d, or n x C x H x W flattened).

    Uses the thin SVD of the centred data (the n x n Gram side when n < d), so a
    d x d covariance is never formed; zero eigenvalues fill up to d.
    ``k`` keeps only the top k (randomised-free, exact).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2 or X.shape[0] < 2:
        raise PifsError("data must have at least 2 samples (n x d array)")
    X = X.reshape(X.shape[0], -1)
    if not np.isfinite(X).all():
        raise PifsError("data contains NaN or inf")
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    if n < d:
        gram = Xc @ Xc.T
        ev = np.linalg.eigvalsh(gram)[::-1] / (n - 1)
    else:
        ev = np.linalg.svd(Xc, compute_uv=False) ** 2 / (n - 1)
    # eigenvalues below the round-off floor of the decomposition are exact zeros
    ev = np.where(ev > ev.max() * max(n, d) * np.finfo(np.float64).eps, ev, 0.0)
    full = np.zeros(d)
    m = min(ev.size, d, n - 1)  # centring removes one degree of freedom: rank <= n - 1
    full[:m] = ev[:m]
    if k is not None:
        full = full[: check_positive_int(k, "k")]
    return Spectrum(full, name=name, meta={"n": int(n), "d": int(d)})


def from_images_fourier(images, name: str = "fourier") -> Spectrum:
    """Stationary (circulant) estimate: per-channel mean |FFT|^2 / (H W) on the DFT grid.

    ``images``: n x C x H x W (or n x H x W). Cost O(n C H W log(HW)), any resolution.
    """
    X = np.asarray(images, dtype=np.float64)
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4 or X.shape[0] < 2:
        raise PifsError("images must be n x C x H x W with n >= 2")
    if not np.isfinite(X).all():
        raise PifsError("images contain NaN or inf")
    n, C, H, W = X.shape
    Xc = X - X.mean(axis=0, keepdims=True)
    power = (np.abs(np.fft.fft2(Xc)) ** 2).mean(axis=0) / (H * W) * n / (n - 1)  # (C, H, W)
    grid = power.mean(axis=0)
    return Spectrum(power.ravel(), name=name, power_grid=grid, channels=C, meta={"n": int(n), "shape": [C, H, W]})


def from_file(path: str | Path) -> Spectrum:
    """Eigenvalues from .npy, .npz (key 'eigenvalues' or the only array), or text (.txt/.csv)."""
    p = Path(path)
    if p.is_dir():
        raise PifsError(f"spectrum file {p} is a folder, not a file")
    if not p.is_file():
        raise PifsError(f"spectrum file not found: {p}")
    if p.stat().st_size == 0:
        raise PifsError(f"spectrum file {p} is empty (expected eigenvalues)")
    try:
        if p.suffix == ".npy":
            ev = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "eigenvalues" if "eigenvalues" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise PifsError(f"{p}: .npz needs an 'eigenvalues' array (has {keys})")
                ev = z[key]
        else:
            with warnings.catch_warnings():  # an all-comment file: numpy warns "input contained no data"
                warnings.simplefilter("error")
                ev = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=1)
    except PifsError:
        raise
    except Exception as exc:  # unreadable file: name it
        raise PifsError(f"cannot read eigenvalues from {p}: {exc}") from None
    if np.size(ev) == 0:
        raise PifsError(f"spectrum file {p} holds no eigenvalues")
    return Spectrum(np.ravel(ev), name=f"file:{p.name}")


def digits() -> Spectrum:
    """PCA spectrum of scikit-learn's 8x8 digits (1797 images, :func:`pifskit.datasets.load_digits`)."""
    from .datasets import load_digits

    return from_data(load_digits().rows()[0], name="digits 8x8")


def parse_spectrum(spec: str, resolution: int = 64, channels: int = 3, pixel_variance: float = 1.0) -> Spectrum:
    """CLI syntax: ``powerlaw:P`` (with resolution/channels/pixel variance), ``digits``, ``file:PATH``."""
    kind, _, arg = spec.partition(":")
    if kind == "powerlaw":
        try:
            p = float(arg) if arg else 2.0
        except ValueError:
            raise PifsError(f"powerlaw exponent must be a number, got {arg!r}") from None
        return powerlaw(resolution, channels, p, pixel_variance)
    if kind == "digits":
        return digits()
    if kind == "file":
        if not arg:
            raise PifsError("file: spectrum needs a path, e.g. file:eigs.npy")
        return from_file(arg)
    raise PifsError(f"unknown spectrum {spec!r}; accepted: powerlaw:P, digits, file:PATH")
