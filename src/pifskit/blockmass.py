"""Off-diagonal block mass of the surrogate denoiser Jacobian (theory section 4).

    M_off(t) = sum_{i != j} ||J_ij||_F^2 / sum_{ij} ||J_ij||_F^2

for the Gaussian-optimal denoiser of a stationary image model, whose Jacobian
is a circular convolution with Fourier multiplier g_t(lambda(k)) (the same on
every channel). With h_t = ifft2(g_t) and p x p patches tiling H x W:

    sum_ij ||J_ij||^2      = H W sum_r h(r)^2
    sum_i ||J_ii||^2       = (H W / p^2) sum_{|dy|,|dx| < p} (p - |dy|)(p - |dx|) h(dy, dx)^2.

M_off is invariant to the scale of J, so g_t / a_t = lambda / (a^2 lambda + s^2)
is used (finite at pure noise). :func:`block_mass` computes the same ratio
from any matrix of squared block norms (measured Jacobians).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ._validate import PifsError, as_float_array, check_positive_int


def patch_overlap_weights(shape: tuple[int, int], patch: int) -> np.ndarray:
    """W(dy, dx) = number of pixel pairs inside one p x p patch at offset (dy, dx), on the DFT offset grid."""
    H, W = shape
    p = check_positive_int(patch, "patch")
    if H % p or W % p:
        raise PifsError(f"patch size {p} does not tile a {H}x{W} image")
    dy = np.fft.fftfreq(H) * H
    dx = np.fft.fftfreq(W) * W
    wy = np.clip(p - np.abs(dy), 0, None)
    wx = np.clip(p - np.abs(dx), 0, None)
    if p == H:  # offsets wrap: the whole image is one patch
        wy = np.full(H, float(p))
    if p == W:
        wx = np.full(W, float(p))
    return wy[:, None] * wx[None, :]


def offdiag_block_mass(logsnr, power_grid, patch: int) -> np.ndarray:
    """Surrogate M_off at each logSNR level for a stationary model with variances ``power_grid`` (H x W)."""
    l = as_float_array(logsnr, "logsnr", ndim=1, allow_inf=True)
    grid = as_float_array(power_grid, "power_grid", ndim=2)
    if (grid < 0).any():
        raise PifsError("power_grid must be >= 0")
    H, W = grid.shape
    weights = patch_overlap_weights((H, W), patch)
    a2 = expit(l)[:, None, None]
    s2 = expit(-l)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = grid[None] / (a2 * grid[None] + s2)  # g / a
    gain = np.where(np.isfinite(gain), gain, 1.0)  # clean level: identity
    h = np.fft.ifft2(gain).real
    h2 = h**2
    total = h2.sum(axis=(1, 2)) * H * W
    diag = (h2 * weights[None]).sum(axis=(1, 2)) * (H * W) / patch**2
    with np.errstate(invalid="ignore"):
        return np.clip(1.0 - diag / total, 0.0, 1.0)


def block_mass(block_frob2) -> float:
    """M_off from a P x P matrix of squared block norms ||J_ij||_F^2."""
    B = as_float_array(block_frob2, "block norms", ndim=2)
    if B.shape[0] != B.shape[1]:
        raise PifsError("block norm matrix must be square")
    total = B.sum()
    if total <= 0:
        raise PifsError("block norm matrix is zero")
    return float(1.0 - np.trace(B) / total)
