"""Noise schedules in variance-preserving (VP) coordinates: a decreasing map t in [0, 1] -> logSNR l(t).

From l, stably at both ends: alpha_bar = sigmoid(l), a = sqrt(sigmoid(l)), s = sqrt(sigmoid(-l)),
sigma_VE = s / a = exp(-l / 2), phi = atan(exp(-l / 2)). VE / EDM / flow parameterisations map to VP by
l = 2 log(alpha / sigma). :class:`DiscreteSchedule` (diffusers' alphas_cumprod) puts training timestep n
at t = (n + 1) / T; t = 0 is the clean endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import expit

from ._validate import PifsError, as_float_array, check_positive_int


def alpha_bar_from_logsnr(l) -> np.ndarray:
    """alpha_bar = sigmoid(l)."""
    return expit(np.asarray(l, dtype=np.float64))


def a_from_logsnr(l) -> np.ndarray:
    """Signal scale a = sqrt(sigmoid(l)); a(+inf) = 1, a(-inf) = 0."""
    return np.sqrt(expit(np.asarray(l, dtype=np.float64)))


def s_from_logsnr(l) -> np.ndarray:
    """Noise scale s = sqrt(sigmoid(-l)); s(+inf) = 0, s(-inf) = 1."""
    return np.sqrt(expit(-np.asarray(l, dtype=np.float64)))


def sigma_from_logsnr(l) -> np.ndarray:
    """VE noise level sigma = s / a = exp(-l / 2) (0 at the clean end)."""
    with np.errstate(over="ignore"):
        return np.exp(-0.5 * np.asarray(l, dtype=np.float64))


def logsnr_from_sigma(sigma) -> np.ndarray:
    """l = -2 log(sigma); sigma = 0 gives +inf."""
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -2.0 * np.log(sigma)


def flow_t_from_sigma(sigma) -> np.ndarray:
    """Flow units t' = sigma / (1 + sigma) of VE levels (sigma = inf -> 1)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(sigma), 1.0, sigma / (1.0 + sigma))


def logsnr_from_alpha_bar(alpha_bar) -> np.ndarray:
    """l = log(alpha_bar) - log(1 - alpha_bar) (+inf at 1, -inf at 0)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(ab) - np.log1p(-ab)


def angle_from_logsnr(l) -> np.ndarray:
    """phi = atan(s / a) = atan(exp(-l / 2)) in [0, pi/2]."""
    return np.arctan(sigma_from_logsnr(l))


class Schedule:
    """A continuous-time VP schedule: subclasses implement :meth:`logsnr`.

    ``t`` is in [0, 1], 1 = noisiest. ``logsnr`` must be non-increasing in t.
    """

    name: str = "schedule"

    def logsnr(self, t) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _t(self, t) -> np.ndarray:
        t = as_float_array(t, "t")
        if ((t < 0) | (t > 1)).any():
            raise PifsError("t must lie in [0, 1]")
        return t

    def alpha_bar(self, t) -> np.ndarray:
        """alpha_bar(t) = sigmoid(l(t))."""
        return alpha_bar_from_logsnr(self.logsnr(t))

    def a(self, t) -> np.ndarray:
        """a(t) = sqrt(alpha_bar(t))."""
        return a_from_logsnr(self.logsnr(t))

    def s(self, t) -> np.ndarray:
        """s(t) = sqrt(1 - alpha_bar(t))."""
        return s_from_logsnr(self.logsnr(t))

    def sigma(self, t) -> np.ndarray:
        """VE sigma(t) = exp(-l(t) / 2)."""
        return sigma_from_logsnr(self.logsnr(t))

    @property
    def logsnr_max(self) -> float:
        """logSNR at t = 0 (the cleanest level)."""
        return float(self.logsnr(0.0))

    @property
    def logsnr_min(self) -> float:
        """logSNR at t = 1 (the noisiest level)."""
        return float(self.logsnr(1.0))

    def t_of_logsnr(self, l) -> np.ndarray:
        """Inverse t(l), by vectorised bisection (exact to float64 resolution).

        Values outside [logsnr_min, logsnr_max] clip to t = 1 / t = 0.
        """
        l = as_float_array(l, "logsnr", allow_inf=True)
        lo = np.zeros_like(l)
        hi = np.ones_like(l)
        for _ in range(64):  # bisection iterations, vectorised over all l
            mid = 0.5 * (lo + hi)
            above = self.logsnr(mid) > l  # still too clean -> move right
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        return 0.5 * (lo + hi)


def _logsnr_from_log_alpha_bar(log_ab: np.ndarray) -> np.ndarray:
    """l = log ab - log(1 - ab) computed from log ab (stable near ab = 1)."""
    with np.errstate(divide="ignore"):
        return log_ab - np.log(-np.expm1(log_ab))


def _set(obj, **values) -> None:
    """Assign normalised fields of a frozen dataclass in ``__post_init__``."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def beta_table(kind: str, num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
               dtype=np.float32, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' betas: linear = linspace(b0, b1, T); scaled_linear = linspace(sqrt b0, sqrt b1, T)^2;
    squaredcos_cap_v2 = min(1 - f((i+1)/T) / f(i/T), max_beta), f(t) = cos((t + 0.008) / 1.008 pi / 2)^2."""
    T = check_positive_int(num_train_timesteps, "num_train_timesteps")
    if kind == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=dtype)
    if kind == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=dtype) ** 2
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta).astype(dtype)


class _BetaRange(Schedule):
    """Validates 0 < beta_start <= beta_end < 1 and the number of training timesteps of a beta schedule."""

    def __post_init__(self):
        b0, b1 = as_float_array(self.beta_start, "beta_start"), as_float_array(self.beta_end, "beta_end")
        if b0.ndim or b1.ndim:
            raise PifsError("beta_start and beta_end must be numbers")
        if not (0 < b0 <= b1 < 1):
            raise PifsError(f"need 0 < beta_start <= beta_end < 1, got beta_start={float(b0)}, beta_end={float(b1)}")
        _set(self, beta_start=float(b0), beta_end=float(b1),
             num_train_timesteps=check_positive_int(self.num_train_timesteps, "num_train_timesteps"))


@dataclass(frozen=True)
class LinearBetaSchedule(_BetaRange):
    """Continuous DDPM linear-beta schedule (Ho et al. 2020).

    beta(u) = T (beta_start + u (beta_end - beta_start)) per unit t, so
    log alpha_bar(t) = -T (beta_start t + (beta_end - beta_start) t^2 / 2).
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_timesteps: int = 1000
    name = "ddpm-linear"

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        T = self.num_train_timesteps
        log_ab = -T * (self.beta_start * t + 0.5 * (self.beta_end - self.beta_start) * t**2)
        return _logsnr_from_log_alpha_bar(log_ab)


@dataclass(frozen=True)
class ScaledLinearBetaSchedule(_BetaRange):
    """Continuous Stable Diffusion 'scaled_linear' schedule.

    sqrt(beta) linear in t from sqrt(beta_start) to sqrt(beta_end);
    log alpha_bar(t) = -T int_0^t beta(u) du.
    """

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    name = "sd-scaled-linear"

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        b0, b1 = np.sqrt(self.beta_start), np.sqrt(self.beta_end)
        # int_0^t (b0 + u (b1 - b0))^2 du
        integral = b0**2 * t + b0 * (b1 - b0) * t**2 + (b1 - b0) ** 2 * t**3 / 3.0
        return _logsnr_from_log_alpha_bar(-self.num_train_timesteps * integral)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """iDDPM cosine schedule (Nichol & Dhariwal 2021) with offset ``s``.

    alpha_bar(t) = cos^2(theta) / cos^2(theta_0), theta = (t + s)/(1 + s) pi/2.
    Stable form: l = 2 log cos(theta) - log(sin(theta - theta_0) sin(theta + theta_0)).
    The discrete version with beta clipping is :meth:`discretize`.
    """

    offset: float = 0.008
    name = "cosine"

    def __post_init__(self):
        if not (0 <= self.offset < 1):
            raise PifsError(f"cosine offset must lie in [0, 1), got {self.offset}")
        _set(self, offset=float(self.offset))

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        s = self.offset
        th = (t + s) / (1 + s) * (np.pi / 2)
        th0 = s / (1 + s) * (np.pi / 2)
        with np.errstate(divide="ignore"):
            l = 2 * np.log(np.abs(np.cos(th))) - np.log(np.sin(th - th0)) - np.log(np.sin(th + th0))
        l = np.where(t >= 1.0, -np.inf, l)
        return np.where(t <= 0.0, np.inf, l)

    def discretize(self, num_train_timesteps: int = 1000, max_beta: float = 0.999) -> "DiscreteSchedule":
        """T-step betas 1 - alpha_bar(t_{i+1}) / alpha_bar(t_i), clipped at ``max_beta``."""
        T = check_positive_int(num_train_timesteps, "num_train_timesteps")
        grid = np.arange(T + 1) / T
        ab = self.alpha_bar(grid)
        with np.errstate(divide="ignore", invalid="ignore"):
            betas = np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)
        betas = np.where(np.isfinite(betas), betas, max_beta)
        return DiscreteSchedule.from_betas(betas, name=f"cosine(s={self.offset:g})-T{T}")


@dataclass(frozen=True)
class SigmoidSchedule(Schedule):
    """Sigmoid schedule (Chen 2023; Jabri et al. 2023).

    alpha_bar(t) = (v_end - sigmoid((start + t (end - start)) / tau)) / (v_end - v_start),
    v_x = sigmoid(x / tau).
    """

    start: float = -3.0
    end: float = 3.0
    tau: float = 1.0
    name = "sigmoid"

    def __post_init__(self):
        if not self.end > self.start or not self.tau > 0:
            raise PifsError("sigmoid schedule needs end > start and tau > 0")
        _set(self, **{k: float(getattr(self, k)) for k in ("start", "end", "tau")})

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        v0, v1 = expit(self.start / self.tau), expit(self.end / self.tau)
        x = (self.start + t * (self.end - self.start)) / self.tau
        num = v1 - expit(x)          # alpha_bar * (v1 - v0)
        den = expit(x) - v0          # (1 - alpha_bar) * (v1 - v0)
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(num, 0.0)) - np.log(np.maximum(den, 0.0))


@dataclass(frozen=True)
class ShiftedCosineSchedule(Schedule):
    """simple diffusion's (shifted) cosine logSNR schedule (Hoogeboom et al. 2023).

    l(t) = -2 log tan(b + t (a_ - b)) + shift, with b = atan(exp(-base_max/2)),
    a_ = atan(exp(-base_min/2)): the unshifted range [base_logsnr_min,
    base_logsnr_max] moved by ``shift``, so the schedule's own range is
    ``logsnr_min = base_logsnr_min + shift`` to ``logsnr_max = base_logsnr_max + shift``.
    ``shift = 2 log(64 / resolution)`` is the paper's resolution shift
    (:meth:`for_resolution`).
    """

    shift: float = 0.0
    base_logsnr_min: float = -15.0
    base_logsnr_max: float = 15.0
    name = "shifted-cosine"

    def __post_init__(self):
        if not self.base_logsnr_max > self.base_logsnr_min:
            raise PifsError("need base_logsnr_max > base_logsnr_min")
        _set(self, **{k: float(getattr(self, k)) for k in ("shift", "base_logsnr_min", "base_logsnr_max")})

    @classmethod
    def for_resolution(cls, resolution: int, base_resolution: int = 64, **kw) -> "ShiftedCosineSchedule":
        """Shift 2 log(base / resolution) as in simple diffusion."""
        if resolution <= 0 or base_resolution <= 0:
            raise PifsError("resolutions must be positive")
        return cls(shift=2.0 * np.log(base_resolution / resolution), **kw)

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        b = np.arctan(np.exp(-0.5 * self.base_logsnr_max))
        a_ = np.arctan(np.exp(-0.5 * self.base_logsnr_min)) - b
        return -2.0 * np.log(np.tan(a_ * t + b)) + self.shift


@dataclass(frozen=True)
class EDMSchedule(Schedule):
    """Karras/EDM VE noise levels mapped to VP.

    sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,
    l(t) = -2 log sigma(t).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    name = "edm"

    def __post_init__(self):
        if not (0 < self.sigma_min < self.sigma_max) or not self.rho > 0:
            raise PifsError("EDM schedule needs 0 < sigma_min < sigma_max and rho > 0")
        _set(self, **{k: float(getattr(self, k)) for k in ("sigma_min", "sigma_max", "rho")})

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return -2.0 * self.rho * np.log(lo + t * (hi - lo))

    def t_of_logsnr(self, l) -> np.ndarray:
        l = as_float_array(l, "logsnr", allow_inf=True)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        t = (np.exp(-l / (2 * self.rho)) - lo) / (hi - lo)
        return np.clip(t, 0.0, 1.0)


@dataclass(frozen=True)
class RectifiedFlowSchedule(Schedule):
    """Rectified flow alpha = 1 - t', sigma = t' with SD3's timestep shift.

    t' = shift t / (1 + (shift - 1) t), so l(t) = 2 log((1 - t) / t) - 2 log(shift):
    the timestep shift is a pure logSNR shift of -2 log(shift).
    """

    shift: float = 1.0
    name = "rectified-flow"

    def __post_init__(self):
        if not self.shift > 0:
            raise PifsError(f"flow shift must be > 0, got {self.shift}")
        _set(self, shift=float(self.shift))

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log1p(-t) - np.log(t)) - 2.0 * np.log(self.shift)

    def t_of_logsnr(self, l) -> np.ndarray:
        l = as_float_array(l, "logsnr", allow_inf=True)
        # (1 - t)/t = shift * exp(l/2)  ->  t = sigmoid(-(l/2 + log shift))
        return expit(-(0.5 * l + np.log(self.shift)))


@dataclass(frozen=True, eq=False)
class DiscreteSchedule(Schedule):
    """A T-step training schedule given by ``alphas_cumprod`` (diffusers' name).

    Training timestep n (0..T-1) is the level alpha_bar[n]; as a continuous
    schedule it sits at t = (n + 1) / T and t = 0 is the clean endpoint
    (log alpha_bar is interpolated linearly in t between the knots).
    """

    alphas_cumprod: np.ndarray
    name: str = "discrete"
    prediction_type: str = "epsilon"
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        ab = as_float_array(self.alphas_cumprod, "alphas_cumprod", ndim=1)
        if ab.size < 1:
            raise PifsError("alphas_cumprod is empty")
        if ((ab < 0) | (ab > 1)).any():
            raise PifsError("alphas_cumprod must lie in [0, 1]")
        if (np.diff(ab) > 0).any():
            raise PifsError("alphas_cumprod must be non-increasing in the timestep (noise must grow)")
        object.__setattr__(self, "alphas_cumprod", ab)

    @classmethod
    def from_betas(cls, betas, name: str = "discrete", dtype=np.float64, **kw) -> "DiscreteSchedule":
        """alphas_cumprod = cumprod(1 - betas), computed in ``dtype``.

        ``dtype=np.float32`` reproduces diffusers' float32 arithmetic to float32
        precision (torch's own float32 ``linspace`` can differ by one ulp).
        """
        betas = as_float_array(betas, "betas", ndim=1)
        if betas.size == 0:
            raise PifsError("betas is empty")
        if ((betas < 0) | (betas > 1)).any():
            raise PifsError("betas must lie in [0, 1]")
        b = betas.astype(dtype)
        # torch's CPU cumprod accumulates float32 in float64 and rounds each output: do the same
        ab = np.cumprod((np.asarray(1.0, dtype=dtype) - b).astype(np.float64)).astype(dtype).astype(np.float64)
        return cls(ab, name=name, **kw)

    @classmethod
    def linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               dtype=np.float64) -> "DiscreteSchedule":
        """DDPM linear betas: linspace(beta_start, beta_end, T)."""
        betas = beta_table("linear", num_train_timesteps, beta_start, beta_end, dtype)
        return cls.from_betas(betas, name=f"linear-T{betas.size}", dtype=dtype)

    @classmethod
    def scaled_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                      beta_end: float = 0.012, dtype=np.float64) -> "DiscreteSchedule":
        """Stable Diffusion betas: linspace(sqrt(beta_start), sqrt(beta_end), T)^2."""
        betas = beta_table("scaled_linear", num_train_timesteps, beta_start, beta_end, dtype)
        return cls.from_betas(betas, name=f"scaled_linear-T{betas.size}", dtype=dtype)

    @classmethod
    def squaredcos_cap_v2(cls, num_train_timesteps: int = 1000, max_beta: float = 0.999) -> "DiscreteSchedule":
        """diffusers' ``squaredcos_cap_v2`` (:func:`beta_table`), computed in float64 and stored as float32."""
        betas = beta_table("squaredcos_cap_v2", num_train_timesteps, max_beta=max_beta)
        return cls.from_betas(betas, name=f"squaredcos_cap_v2-T{betas.size}", dtype=np.float32)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.size)

    @property
    def betas(self) -> np.ndarray:
        ab = self.alphas_cumprod
        prev = np.concatenate([[1.0], ab[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(prev > 0, 1.0 - ab / np.where(prev > 0, prev, 1.0), 1.0)

    @property
    def logsnr_table(self) -> np.ndarray:
        """logSNR of each training timestep (length T)."""
        return logsnr_from_alpha_bar(self.alphas_cumprod)

    @property
    def sigmas_table(self) -> np.ndarray:
        """VE sigmas sqrt((1 - ab) / ab) of each training timestep (diffusers' order: t = 0 first)."""
        return sigma_from_logsnr(self.logsnr_table)

    def logsnr(self, t) -> np.ndarray:
        t = self._t(t)
        T = self.num_train_timesteps
        knots = np.arange(T + 1) / T
        with np.errstate(divide="ignore"):
            log_ab = np.concatenate([[0.0], np.log(self.alphas_cumprod)])
        if np.isinf(log_ab[-1]):
            # zero terminal SNR: interpolate log(sigma^2) instead near the end
            log_ab = np.where(np.isinf(log_ab), -745.0, log_ab)
        return _logsnr_from_log_alpha_bar(np.interp(t, knots, log_ab))

    def logsnr_at_timestep(self, timesteps) -> np.ndarray:
        """logSNR at (possibly fractional) training timesteps, linear in logSNR between integers.

        Equivalent to diffusers' log-sigma interpolation ``_sigma_to_t``'s inverse.
        Timestep -1 is the clean endpoint (+inf).
        """
        ts = as_float_array(timesteps, "timesteps")
        T = self.num_train_timesteps
        if ((ts < -1) | (ts > T - 1)).any():
            raise PifsError(f"timesteps must lie in [-1, {T - 1}] (T = {T})")
        table = self.logsnr_table
        out = np.interp(ts, np.arange(T), np.where(np.isinf(table), -1e300, table))
        out = np.where(ts < 0, np.inf, out)
        return np.where(np.isclose(out, -1e300) | (out < -1e299), -np.inf, out)

    def timestep_of_sigma(self, sigmas) -> np.ndarray:
        """Fractional training timestep of VE sigmas (diffusers' ``_sigma_to_t``: interpolation in log sigma)."""
        sig = as_float_array(sigmas, "sigmas")
        log_table = np.log(np.maximum(self.sigmas_table, 1e-300))
        ls = np.log(np.maximum(sig, 1e-300))
        return np.interp(ls, log_table, np.arange(self.num_train_timesteps))


_ZOO: dict[str, Callable[[], Schedule]] = {
    "sd": lambda: DiscreteSchedule.scaled_linear(1000, 0.00085, 0.012, dtype=np.float32),
    "ddpm": lambda: DiscreteSchedule.linear(1000, 1e-4, 0.02, dtype=np.float32),
    "cosine-discrete": lambda: CosineSchedule(0.008).discretize(1000),
    "squaredcos_cap_v2": lambda: DiscreteSchedule.squaredcos_cap_v2(1000),
    "ddpm-linear": LinearBetaSchedule,
    "sd-scaled-linear": ScaledLinearBetaSchedule,
    "cosine": CosineSchedule,
    "sigmoid": SigmoidSchedule,
    "shifted-cosine": ShiftedCosineSchedule,
    "edm": EDMSchedule,
    "rectified-flow": RectifiedFlowSchedule,
    "sd3": lambda: RectifiedFlowSchedule(shift=3.0),
    "flux": lambda: flux_schedule(1024),
}


def flux_schedule(resolution: int = 1024) -> RectifiedFlowSchedule:
    """Flux's resolution-dependent shift: mu linear in the token count (H/16)(W/16) between 256 -> 0.5 and
    4096 -> 1.15 (diffusers' FluxPipeline defaults), shift = e^mu (``time_shift`` with exponent 1)."""
    if not resolution > 0:
        raise PifsError(f"flux resolution must be > 0, got {resolution}")
    return RectifiedFlowSchedule(shift=float(np.exp(calculate_shift((float(resolution) / 16.0) ** 2))))


def calculate_shift(image_seq_len: float, cfg: dict | None = None) -> float:
    """Dynamic-shift mu of Flux / SD3 (diffusers' ``calculate_shift``), linear in the latent token count L:
    mu = base_shift + (max_shift - base_shift) (L - base_seq) / (max_seq - base_seq), with the scheduler
    config's base/max_image_seq_len (default 256, 4096) and base/max_shift (0.5, 1.15)."""
    cfg = cfg or {}
    base_seq, max_seq = float(cfg.get("base_image_seq_len", 256)), float(cfg.get("max_image_seq_len", 4096))
    base_shift, max_shift = float(cfg.get("base_shift", 0.5)), float(cfg.get("max_shift", 1.15))
    m = (max_shift - base_shift) / (max_seq - base_seq)
    return float(image_seq_len * m + (base_shift - m * base_seq))


#: diffusers' ``beta_schedule`` spellings -> the zoo's discrete 1000-step schedule with diffusers' defaults
SCHEDULE_ALIASES: dict[str, str] = {"scaled_linear": "sd", "linear": "ddpm"}

SCHEDULE_NAMES: tuple[str, ...] = tuple(_ZOO) + tuple(SCHEDULE_ALIASES)


def get_schedule(name: str) -> Schedule:
    """A schedule from the built-in zoo by name (see ``SCHEDULE_NAMES``; case-insensitive).

    ``sd`` / ``ddpm`` / ``cosine-discrete`` / ``squaredcos_cap_v2`` are the
    1000-step discrete training schedules (float32 betas as in diffusers; the
    diffusers spellings ``scaled_linear`` and ``linear`` name ``sd`` and
    ``ddpm``); ``sd-scaled-linear`` / ``ddpm-linear`` are their continuous-time
    limits. ``name:param`` sets the family's main parameter, e.g.
    ``cosine:0.012`` (offset), ``shifted-cosine:-1.386`` (logSNR shift),
    ``rectified-flow:3`` (timestep shift), ``edm:0.002:700`` (EDM range), ``flux:1024`` (Flux's
    resolution shift).
    """
    if not isinstance(name, str):
        raise PifsError(f"schedule name must be a string, got {name!r}")
    base, _, param = name.strip().partition(":")
    base = base.lower()
    base = SCHEDULE_ALIASES.get(base, base)
    if base not in _ZOO:
        raise PifsError(f"unknown schedule {name!r}; accepted: {', '.join(SCHEDULE_NAMES)}")
    if not param:
        sched = _ZOO[base]()
    elif base == "edm" and ":" in param:  # edm:SIGMA_MIN:SIGMA_MAX (e.g. 0.002:700 for SVD)
        lo, _, hi = param.partition(":")
        try:
            sched = EDMSchedule(float(lo), float(hi))
        except ValueError:
            raise PifsError(f"edm range in {name!r} must be two numbers, edm:SIGMA_MIN:SIGMA_MAX") from None
    elif base == "flux":  # flux:RESOLUTION
        try:
            sched = flux_schedule(int(param))
        except ValueError:
            raise PifsError(f"flux resolution in {name!r} must be an integer") from None
    else:
        try:
            value = float(param)
        except ValueError:
            raise PifsError(f"schedule parameter in {name!r} must be a number") from None
        ctor = {"cosine": CosineSchedule, "shifted-cosine": ShiftedCosineSchedule,
                "rectified-flow": RectifiedFlowSchedule}.get(base)
        if ctor is None:
            raise PifsError(f"schedule {base!r} takes no ':param'; parametrised: cosine, shifted-cosine, "
                            "rectified-flow")
        sched = ctor(value)
    return sched
