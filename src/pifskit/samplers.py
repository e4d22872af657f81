"""Samplers over an explicit :class:`~pifskit.chains.Chain`, with k-diffusion's uniform signature
``sampler(denoiser, x, chain, *, callback=None, rng=None, **opts) -> x``.

``denoiser(x, logsnr)`` is the x0 estimate D for VP states x = a x0 + s e of shape (B, d); ``x`` is the
state at the chain's first level, the result the state at its last; ``callback({"i", "x", "denoised",
"logsnr"})`` runs after each step. A step from pure noise is taken in its exact limit
x_s = s_s x_T + a_s D(x_T). The update rules: docs/core.md#samplers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import log_expit

from ._validate import PifsError, as_float_array, check_choice
from .chains import Chain
from .geometry import step_coefficients

Denoiser = Callable[[np.ndarray, float], np.ndarray]


def _check(chain: Chain, x) -> np.ndarray:
    if not isinstance(chain, Chain):
        raise PifsError(f"chain must be a pifskit.chains.Chain, got {type(chain).__name__}")
    x = as_float_array(x, "x")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise PifsError(f"x must be a non-empty (B, d) batch, got shape {x.shape}")
    return x.copy()


def _noise(rng) -> np.random.Generator:
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if not hasattr(rng, "standard_normal"):
        raise PifsError("rng must be a numpy Generator, an int seed or None")
    return rng


def initial_noise(chain: Chain, n: int, d: int, rng=None) -> np.ndarray:
    """x_T ~ N(0, I) (VP) of shape (n, d): the standard prior at the chain's first level."""
    if n < 1 or d < 1:
        raise PifsError(f"need n >= 1 samples of dimension d >= 1, got n={n}, d={d}")
    return _noise(rng).standard_normal((n, d))


def ddim_noise_std(chain: Chain, eta: float) -> np.ndarray:
    """Per-step DDIM noise std sig_i = eta (s_s / s_t) sqrt(1 - alpha_bar_t / alpha_bar_s) (N values)."""
    l = chain.logsnr
    s = chain.s
    with np.errstate(invalid="ignore"):
        ratio = log_expit(l[:-1]) - log_expit(l[1:])  # log(alpha_bar_t / alpha_bar_s) <= 0
    q = -np.expm1(ratio)
    return eta * (s[1:] / s[:-1]) * np.sqrt(np.clip(q, 0.0, 1.0))


def sample_ddim(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None, rng=None,
                eta: float = 0.0) -> np.ndarray:
    """DDIM (Song et al. 2021): x_s = c x_t + d D (``geometry.step_coefficients``) for eta = 0; for eta > 0
    x_s = a_s D + sqrt(s_s^2 - sig^2) eps_hat + sig z with sig from :func:`ddim_noise_std` (eta = 1: DDPM-like)."""
    x = _check(chain, x)
    if not (np.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise PifsError(f"DDIM eta must lie in [0, 1], got {eta}")
    l, a, s = chain.logsnr, chain.a, chain.s
    if eta == 0.0:
        c, d = step_coefficients(chain)
        sig = np.zeros(chain.n_steps)
    else:
        sig = ddim_noise_std(chain, eta)
        c = np.sqrt(np.clip(s[1:] ** 2 - sig**2, 0.0, None)) / s[:-1]
        d = a[1:] - a[:-1] * c
        noise = _noise(rng)
    for i in range(chain.n_steps):
        D = denoiser(x, float(l[i]))
        x = c[i] * x + d[i] * D
        if sig[i] > 0:
            x = x + sig[i] * noise.standard_normal(x.shape)
        if callback is not None:
            callback({"i": i, "x": x, "denoised": D, "logsnr": float(l[i])})
    return x


def _ve_sampler(denoiser, x, chain: Chain, callback, update: Callable) -> np.ndarray:
    """The VE loop: y = x / a_0 (from pure noise: the exact first step y_1 = (s_1 x_T + a_1 D(x_T)) / a_1),
    then y <- ``update(i, y, D, sigmas)`` with D the denoiser at level i; returns the VP state a_N y."""
    x = _check(chain, x)
    l, a, s, sig = chain.logsnr, chain.a, chain.s, chain.sigmas
    y, start = (x / a[0], 0) if not chain.starts_from_noise else (None, 1)
    if start:
        D = denoiser(x, float(l[0]))
        y = (s[1] * x + a[1] * D) / a[1]
        if callback is not None:
            callback({"i": 0, "x": a[1] * y, "denoised": D, "logsnr": float(l[0])})
    for i in range(start, chain.n_steps):
        D = denoiser(a[i] * y, float(l[i]))
        y = update(i, y, D, sig)
        if callback is not None:
            callback({"i": i, "x": a[i + 1] * y, "denoised": D, "logsnr": float(l[i])})
    return a[-1] * y


def sample_euler(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None,
                 rng=None) -> np.ndarray:
    """Euler's method on the probability-flow ODE dy/dsigma = (y - D(y; sigma)) / sigma, y = x / a (VE units).

    Identical to DDIM (eta = 0) in exact arithmetic; an independent implementation."""
    return _ve_sampler(denoiser, x, chain, callback,
                       lambda i, y, D, sig: y + (sig[i + 1] - sig[i]) * (y - D) / sig[i])


def sample_heun(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None,
                rng=None) -> np.ndarray:
    """Heun's 2nd-order method (EDM Algorithm 1, no churn): Euler predictor, trapezoidal corrector; Euler
    on the final step to sigma = 0."""

    def update(i, y, D, sig):
        d1 = (y - D) / sig[i]
        y_pred = y + (sig[i + 1] - sig[i]) * d1
        if sig[i + 1] == 0:
            return y_pred
        d2 = (y_pred - denoiser(chain.a[i + 1] * y_pred, float(chain.logsnr[i + 1]))) / sig[i + 1]
        return y + (sig[i + 1] - sig[i]) * 0.5 * (d1 + d2)

    return _ve_sampler(denoiser, x, chain, callback, update)


def sample_dpmpp_2m(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None,
                    rng=None) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al. 2022; k-diffusion's ``sample_dpmpp_2m``), h = (l_s - l_t) / 2:
    x_s = (s_s/s_t) x_t + a_s (1 - e^-h) D', D' = (1 + 1/2r) D_i - (1/2r) D_{i-1}, r = h_{i-1} / h_i;
    first order on the first step and on steps from pure noise or to the clean endpoint."""
    x = _check(chain, x)
    l, a, s = chain.logsnr, chain.a, chain.s
    old_D = None
    h_last = np.inf
    for i in range(chain.n_steps):
        D = denoiser(x, float(l[i]))
        with np.errstate(invalid="ignore"):
            h = 0.5 * (l[i + 1] - l[i])
        D_use = D
        if old_D is not None and np.isfinite(h) and np.isfinite(h_last):
            r = h_last / h
            D_use = (1.0 + 1.0 / (2.0 * r)) * D - (1.0 / (2.0 * r)) * old_D
        exp_neg_h = 0.0 if np.isinf(l[i]) or np.isinf(l[i + 1]) else float(np.exp(-h))  # sigma_s / sigma_t
        x = (s[i + 1] / s[i]) * x + (a[i + 1] * (1.0 - exp_neg_h)) * D_use
        old_D, h_last = D, h
        if callback is not None:
            callback({"i": i, "x": x, "denoised": D, "logsnr": float(l[i])})
    return x


def sample_dpmpp_3m(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None,
                    rng=None) -> np.ndarray:
    """DPM-Solver++(3M) (k-diffusion's ``sample_dpmpp_3m_sde``, eta = 0), VE units, h = log(sigma / sigma'):
    y' = rho y + (1 - rho) D + phi2 d1 - phi3 d2, phi2 = (rho - 1)/h + 1, phi3 = phi2/h - 1/2, d1/d2 the
    divided differences of the last three denoiser outputs; x0 = D on the last step."""
    hist: list[tuple[np.ndarray, float]] = []  # (D, h) of the previous steps, newest first

    def update(i, y, D, sig):
        if sig[i + 1] == 0:
            return D
        h = float(np.log(sig[i] / sig[i + 1]))
        rho = sig[i + 1] / sig[i]
        y_new = rho * y + (1.0 - rho) * D
        phi2 = (rho - 1.0) / h + 1.0
        if len(hist) >= 2:
            (D1, h1), (D2, h2) = hist[0], hist[1]
            r0, r1 = h1 / h, h2 / h
            d10 = (D - D1) / r0
            d11 = (D1 - D2) / r1
            d1 = d10 + (d10 - d11) * r0 / (r0 + r1)
            d2 = (d10 - d11) / (r0 + r1)
            y_new = y_new + phi2 * d1 - (phi2 / h - 0.5) * d2
        elif len(hist) == 1:
            D1, h1 = hist[0]
            y_new = y_new + phi2 * (D - D1) / (h1 / h)
        hist[:] = [(D, h)] + hist[:1]
        return y_new

    return _ve_sampler(denoiser, x, chain, callback, update)


_AB_WEIGHTS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def sample_ipndm(denoiser: Denoiser, x, chain: Chain, *, callback: Callable | None = None, rng=None,
                 max_order: int = 4) -> np.ndarray:
    """Improved PNDM (Zhang & Chen 2023; k-diffusion ``sample_ipndm``): Euler in sigma with the fixed-step
    Adams-Bashforth combination of the last min(i + 1, max_order) slopes d = (y - D)/sigma."""
    if max_order not in (1, 2, 3, 4):
        raise PifsError(f"iPNDM max_order must be 1..4, got {max_order}")
    slopes: list[np.ndarray] = []  # newest first

    def update(i, y, D, sig):
        d = (y - D) / sig[i]
        w = _AB_WEIGHTS[min(len(slopes) + 1, max_order) - 1]
        comb = w[0] * d
        for wj, dj in zip(w[1:], slopes):
            comb = comb + wj * dj
        slopes[:] = [d] + slopes[:max_order - 2]
        return y + (sig[i + 1] - sig[i]) * comb

    return _ve_sampler(denoiser, x, chain, callback, update)


SAMPLERS: dict[str, Callable] = {
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp2m": sample_dpmpp_2m,
    "dpmpp3m": sample_dpmpp_3m,
    "ipndm": sample_ipndm,
}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under ``name`` (see ``SAMPLERS``)."""
    check_choice(name, "sampler", SAMPLERS)
    return SAMPLERS[name]


def parse_sampler(spec: str) -> tuple[str, Callable, dict]:
    """CLI syntax ``name`` or ``ddim:ETA`` -> (label, function, options)."""
    name, _, arg = spec.strip().partition(":")
    fn = get_sampler(name)
    if not arg:
        return name, fn, {}
    if name != "ddim":
        raise PifsError(f"sampler {name!r} takes no ':' option (only ddim:ETA does)")
    try:
        eta = float(arg)
    except ValueError:
        raise PifsError(f"DDIM eta in {spec!r} must be a number") from None
    if not (0.0 <= eta <= 1.0):
        raise PifsError(f"DDIM eta must lie in [0, 1], got {eta}")
    return (f"ddim:{eta:g}" if eta > 0 else "ddim"), fn, {"eta": eta}


def sampler_nfe(name: str, chain: Chain) -> int:
    """Denoiser evaluations the sampler spends on ``chain`` (Heun: 2 per step except Euler steps)."""
    base = name.partition(":")[0]
    check_choice(base, "sampler", SAMPLERS)
    N = chain.n_steps
    euler_steps = {i for i, e in ((0, chain.starts_from_noise), (N - 1, chain.lands_clean)) if e}
    return N if base != "heun" else 2 * N - len(euler_steps)
