"""Sampling chains: the N + 1 noise levels a sampler visits, as logSNR, noisiest first.

Step i maps level i to level i + 1 with one denoiser evaluation at level i; ``logsnr[0]`` may be -inf
(pure noise), ``logsnr[-1]`` +inf (clean). Spacing rules: see docs/core.md#chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validate import PifsError, as_float_array, check_choice, check_positive_int
from .schedules import (
    DiscreteSchedule,
    Schedule,
    a_from_logsnr,
    alpha_bar_from_logsnr,
    angle_from_logsnr,
    logsnr_from_alpha_bar,
    logsnr_from_sigma,
    s_from_logsnr,
    sigma_from_logsnr,
)


@dataclass(frozen=True, eq=False)
class Chain:
    """N + 1 noise levels (logSNR, strictly increasing: noisiest first)."""

    logsnr: np.ndarray
    timesteps: np.ndarray | None = None
    name: str = "chain"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        l = as_float_array(self.logsnr, "chain logsnr", ndim=1, allow_inf=True)
        if l.size < 2:
            raise PifsError("a chain needs at least 2 levels (1 step)")
        if np.isinf(l[1:-1]).any() or l[0] == np.inf or l[-1] == -np.inf:
            raise PifsError("only the first level may be pure noise (-inf) and only the last clean (+inf)")
        if not (np.diff(l) > 0).all():
            raise PifsError("chain levels must be strictly decreasing in noise (logSNR strictly increasing)")
        object.__setattr__(self, "logsnr", l)
        if self.timesteps is not None:
            ts = np.asarray(self.timesteps)
            if ts.shape != (l.size - 1,):
                raise PifsError(f"chain has {l.size - 1} steps but {ts.size} timesteps")
            object.__setattr__(self, "timesteps", ts)

    @classmethod
    def from_sigmas(cls, sigmas, schedule: DiscreteSchedule | None = None, name: str = "sigmas") -> "Chain":
        """From VE sigmas, noisiest first; a trailing 0.0 is the clean endpoint (diffusers' ``sigmas=``)."""
        sig = as_float_array(sigmas, "sigmas", ndim=1)
        if (sig < 0).any():
            raise PifsError("sigmas must be >= 0")
        if (sig[:-1] == 0).any():
            raise PifsError("only the last sigma may be 0")
        if not (np.diff(sig) < 0).all():
            raise PifsError("sigmas must be strictly decreasing")
        ts = None
        if isinstance(schedule, DiscreteSchedule):
            ts = schedule.timestep_of_sigma(sig[:-1])
        return cls(logsnr_from_sigma(sig), timesteps=ts, name=name)

    @classmethod
    def from_alpha_bar(cls, alpha_bar, name: str = "alpha_bar") -> "Chain":
        """From alpha_bar levels, noisiest first (1.0 = clean, 0.0 = pure noise)."""
        ab = as_float_array(alpha_bar, "alpha_bar", ndim=1)
        if ((ab < 0) | (ab > 1)).any():
            raise PifsError("alpha_bar must lie in [0, 1]")
        return cls(logsnr_from_alpha_bar(ab), name=name)

    @classmethod
    def from_timesteps(cls, schedule: DiscreteSchedule, timesteps, *, set_alpha_to_one: bool = True,
                       name: str = "timesteps") -> "Chain":
        """From training timesteps (diffusers' ``timesteps=``), strictly decreasing.

        The last step lands on the clean endpoint if ``set_alpha_to_one`` (DDIM's
        ``final_alpha_cumprod = 1``), else on alpha_bar[0].
        """
        if not isinstance(schedule, DiscreteSchedule):
            raise PifsError("timesteps need a discrete schedule (sd, ddpm, cosine-discrete or a diffusers config)")
        ts = as_float_array(timesteps, "timesteps", ndim=1)
        T = schedule.num_train_timesteps
        if ts.size == 0:
            raise PifsError("timesteps is empty")
        if (ts != np.round(ts)).any():
            raise PifsError("timesteps must be integers")
        if ((ts < 0) | (ts > T - 1)).any():
            raise PifsError(f"timesteps must lie in [0, {T - 1}]")
        if not (np.diff(ts) < 0).all():
            raise PifsError("timesteps must be strictly decreasing (noisiest first) and unique")
        ts = ts.astype(np.int64)
        levels = schedule.logsnr_table[ts]
        final = np.inf if set_alpha_to_one else schedule.logsnr_table[0]
        meta = {}
        if not set_alpha_to_one and ts[-1] == 0:
            # DDIM from timestep 0 to final_alpha_cumprod = alpha_bar[0]: c = 1, d = 0, the identity map.
            if ts.size == 1:
                raise PifsError("the only step goes from timestep 0 to alpha_bar[0]: an empty chain")
            ts, levels = ts[:-1], levels[:-1]
            meta["dropped_identity_step"] = True
        return cls(np.concatenate([levels, [final]]), timesteps=ts, name=name, meta=meta)

    @property
    def n_steps(self) -> int:
        return int(self.logsnr.size - 1)

    @property
    def lands_clean(self) -> bool:
        """True if the last step lands on the clean endpoint (a = 1, s = 0)."""
        return bool(self.logsnr[-1] == np.inf)

    @property
    def starts_from_noise(self) -> bool:
        """True if the first level is pure noise (a = 0)."""
        return bool(self.logsnr[0] == -np.inf)

    @property
    def alpha_bar(self) -> np.ndarray:
        return alpha_bar_from_logsnr(self.logsnr)

    @property
    def a(self) -> np.ndarray:
        return a_from_logsnr(self.logsnr)

    @property
    def s(self) -> np.ndarray:
        return s_from_logsnr(self.logsnr)

    @property
    def sigmas(self) -> np.ndarray:
        """VE sigmas, noisiest first (0.0 at a clean endpoint, inf at pure noise)."""
        return sigma_from_logsnr(self.logsnr)

    @property
    def phi(self) -> np.ndarray:
        """Angles phi = atan(s / a), decreasing from <= pi/2 to >= 0."""
        return angle_from_logsnr(self.logsnr)

    def to_dict(self) -> dict:
        """JSON-ready description (inf written as strings by the CLI's encoder)."""
        return {
            "name": self.name,
            "n_steps": self.n_steps,
            "lands_clean": self.lands_clean,
            "starts_from_noise": self.starts_from_noise,
            "logsnr": self.logsnr.tolist(),
            "alpha_bar": self.alpha_bar.tolist(),
            "sigmas": self.sigmas.tolist(),
            "timesteps": None if self.timesteps is None else np.asarray(self.timesteps).tolist(),
        }


def diffusers_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading",
                        steps_offset: int = 0) -> np.ndarray:
    """Training timesteps exactly as ``DDIMScheduler.set_timesteps`` picks them.

    linspace: round(linspace(0, T-1, N))[::-1];
    leading:  arange(N) * (T // N), reversed, + steps_offset;
    trailing: round(T - i T/N) - 1, i = 0..N-1 (diffusers' arange form can emit an
    extra timestep -1 for some N; pifskit returns the N well-formed ones).
    """
    T = check_positive_int(num_train_timesteps, "num_train_timesteps")
    N = check_positive_int(num_inference_steps, "steps", maximum=T)
    check_choice(spacing, "timestep_spacing", ("leading", "trailing", "linspace"))
    if spacing == "linspace":
        return np.linspace(0, T - 1, N).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, N) * (T // N)).round()[::-1].copy().astype(np.int64) + int(steps_offset)
    return np.round(T - np.arange(N) * (T / N)).astype(np.int64) - 1


def spaced_chain(schedule: DiscreteSchedule, steps: int, spacing: str = "trailing", *, steps_offset: int = 0,
                 set_alpha_to_one: bool = True) -> Chain:
    """The DDIM chain diffusers runs for ``timestep_spacing`` = ``spacing``.

    Note: ``DDIMScheduler.step`` moves to t - T // N; that equals the next
    listed timestep for 'leading' and for 'trailing' when N divides T. pifskit's
    chain always steps to the next listed level (as DPM-Solver/Euler do).
    """
    if not isinstance(schedule, DiscreteSchedule):
        raise PifsError(f"spacing {spacing!r} needs a discrete schedule; use 'uniform' for continuous ones")
    ts = diffusers_timesteps(schedule.num_train_timesteps, steps, spacing, steps_offset)
    if ts.max() > schedule.num_train_timesteps - 1:
        raise PifsError("steps_offset pushes a timestep past T - 1")
    return Chain.from_timesteps(schedule, ts, set_alpha_to_one=set_alpha_to_one, name=f"{spacing}-{steps}")


def uniform_time_chain(schedule: Schedule, steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Chain:
    """N steps uniform in t from t_max to t_min (continuous schedules)."""
    N = check_positive_int(steps, "steps")
    if not (0 <= t_min < t_max <= 1):
        raise PifsError("need 0 <= t_min < t_max <= 1")
    t = np.linspace(t_max, t_min, N + 1)
    return Chain(schedule.logsnr(t), name=f"uniform-{N}")


def sigma_range(schedule: Schedule) -> tuple[float, float]:
    """(sigma_min, sigma_max): the finite VE noise range a sampler uses.

    Discrete: the first and last training sigmas (the last finite one under zero
    terminal SNR). Continuous: sigma at t = 1/1000 and at t = 1 (or t = 0.999
    when t = 1 is pure noise).
    """
    if isinstance(schedule, DiscreteSchedule):
        table = schedule.sigmas_table
        finite = table[np.isfinite(table)]
        cfg = schedule.config  # a diffusers config's sigma_min / sigma_max set the range its sampler uses
        convert = any(cfg.get(f"use_{k}_sigmas") for k in ("karras", "exponential", "beta"))
        lo = cfg.get("sigma_min") if convert and cfg.get("sigma_min") is not None else finite[0]
        hi = cfg.get("sigma_max") if convert and cfg.get("sigma_max") is not None else finite[-1]
        return float(lo), float(hi)
    smin = float(schedule.sigma(1e-3))
    smax = float(schedule.sigma(1.0))
    if not np.isfinite(smax):
        smax = float(schedule.sigma(0.999))
    return smin, smax


def _noisy_levels_to_chain(schedule: Schedule, sigmas: np.ndarray, name: str) -> Chain:
    sig = np.concatenate([sigmas, [0.0]])
    return Chain.from_sigmas(sig, schedule if isinstance(schedule, DiscreteSchedule) else None, name=name)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022): (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    n = check_positive_int(n, "steps")
    if not (0 < sigma_min < sigma_max):
        raise PifsError("need 0 < sigma_min < sigma_max")
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _range(schedule: Schedule, sigma_min: float | None, sigma_max: float | None) -> tuple[float, float]:
    """The given (sigma_min, sigma_max), each defaulting to :func:`sigma_range`'s."""
    smin, smax = sigma_range(schedule)
    return smin if sigma_min is None else sigma_min, smax if sigma_max is None else sigma_max


def karras_chain(schedule: Schedule, steps: int, rho: float = 7.0, sigma_min: float | None = None,
                 sigma_max: float | None = None) -> Chain:
    """N Karras levels from sigma_max to sigma_min, then the clean endpoint (diffusers' ``use_karras_sigmas``)."""
    smin, smax = _range(schedule, sigma_min, sigma_max)
    sig = karras_sigmas(smin, smax, steps, rho) if steps > 1 else np.array([smax])
    return _noisy_levels_to_chain(schedule, sig, f"karras{rho:g}-{steps}")


def uniform_logsnr_chain(schedule: Schedule, steps: int, sigma_min: float | None = None,
                         sigma_max: float | None = None) -> Chain:
    """N levels uniform in logSNR (= uniform in log sigma) from sigma_max to sigma_min, then clean."""
    N = check_positive_int(steps, "steps")
    smin, smax = _range(schedule, sigma_min, sigma_max)
    sig = np.exp(np.linspace(np.log(smax), np.log(smin), N)) if N > 1 else np.array([smax])
    return _noisy_levels_to_chain(schedule, sig, f"logsnr-{N}")


#: Published 10-step AYS sigmas (11 values: the 10 noisy levels and sigma_min).
AYS_SIGMAS: dict[str, np.ndarray] = {
    "sd15": np.array([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]),
    "sdxl": np.array([14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]),
    "svd": np.array([700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]),
}
#: Published 10-step AYS training timesteps.
AYS_TIMESTEPS: dict[str, np.ndarray] = {
    "sd15": np.array([999, 850, 736, 645, 545, 455, 343, 233, 124, 24]),
    "sdxl": np.array([999, 845, 730, 587, 443, 310, 193, 116, 53, 13]),
}


def loglinear_interp(values, n: int) -> np.ndarray:
    """Resample a decreasing positive list to n points, linearly in log (AYS's rule)."""
    v = as_float_array(values, "values", ndim=1)
    n = check_positive_int(n, "points")
    xs = np.linspace(0, 1, v.size)
    ys = np.log(v[::-1])
    new = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))
    return new[::-1].copy()


def ays_sigmas(model: str, steps: int) -> np.ndarray:
    """N + 1 AYS sigmas (noisy levels and sigma_min) for N steps, log-linearly interpolated."""
    check_choice(model, "AYS model", AYS_SIGMAS)
    N = check_positive_int(steps, "steps")
    base = AYS_SIGMAS[model]
    return base.copy() if N == 10 else loglinear_interp(base, N + 1)


def _noted(chain: Chain, notice: str) -> Chain:
    chain.meta.setdefault("notices", []).append(notice)
    return chain


def ays_chain(model: str, steps: int = 10, schedule: Schedule | None = None) -> Chain:
    """The AYS chain as diffusers runs it: N noisy levels, sigma_min replaced by 0.0 (clean).

    With a ``schedule``, its published levels must lie inside the schedule's noise range
    (``sigma_range``, 0.1 % slack for the lists' rounding): AYS-SVD's 700..0.002 is not SD's range.
    """
    sig = ays_sigmas(model, steps)
    if schedule is not None:
        lo, hi = sigma_range(schedule)
        if sig[:-1].max() > hi * 1.001 or sig[:-1].min() < lo * 0.999:
            raise PifsError(f"ays-{model} levels {sig[:-1].min():.4g}..{sig[:-1].max():.4g} lie outside this "
                            f"schedule's noise range {lo:.4g}..{hi:.4g}; choose the AYS list made for it")
    return _noisy_levels_to_chain(schedule, sig[:-1], f"ays-{model}-{steps}")


SPACINGS = ("trailing", "leading", "linspace", "uniform", "logsnr", "karras", "ays-sd15", "ays-sdxl", "ays-svd")


#: the one rule that maps a spacing name onto a schedule (shown by the CLI's --help)
SPACING_RULE = ("trailing/leading/linspace are diffusers' timestep rules on a discrete schedule; on a continuous "
                "one trailing and linspace mean uniform in t and leading is refused; uniform is uniform in t, which "
                "on a discrete schedule is the trailing rule; logsnr, karras and ays-* are noise levels on any "
                "schedule whose range holds them")


def make_chain(schedule: Schedule, steps: int, spacing: str = "trailing", **kw) -> Chain:
    """One entry point: a chain of ``steps`` steps with the named ``spacing`` (rule: ``SPACING_RULE``).

    karras takes ``rho=`` (default 7), karras / logsnr ``sigma_min=`` / ``sigma_max=``, the diffusers rules
    ``steps_offset=`` / ``set_alpha_to_one=``. When a name is mapped to another rule,
    ``chain.meta['notices']`` says so (the CLI prints it).
    """
    check_choice(spacing, "spacing", SPACINGS)
    N = check_positive_int(steps, "steps")
    discrete = isinstance(schedule, DiscreteSchedule)
    accepted = {"karras": {"rho", "sigma_min", "sigma_max"}, "logsnr": {"sigma_min", "sigma_max"}}.get(spacing, set())
    if spacing in ("trailing", "leading", "linspace", "uniform") and discrete:
        accepted = {"steps_offset", "set_alpha_to_one"}
    unused = sorted(set(kw) - accepted)
    if unused:
        raise PifsError(f"spacing {spacing!r} on {'a discrete' if discrete else 'a continuous'} schedule does not "
                        f"take {', '.join(unused)}; accepted: {', '.join(sorted(accepted)) or 'none'}")
    if spacing in ("trailing", "leading", "linspace"):
        if discrete:
            check_positive_int(N, "steps", maximum=schedule.num_train_timesteps)
            return spaced_chain(schedule, N, spacing, **kw)
        if spacing == "leading":
            raise PifsError("'leading' spacing needs a discrete schedule (it has no continuous-time "
                            "counterpart); use trailing, uniform or logsnr")
        return _noted(uniform_time_chain(schedule, N),
                      f"spacing {spacing!r} on a continuous schedule: uniform in t (diffusers' rule needs a grid)")
    if spacing == "uniform":
        if discrete:
            return _noted(spaced_chain(schedule, N, "trailing", **kw),
                          "spacing 'uniform' on a discrete schedule: uniform in the training timestep, "
                          "i.e. diffusers' trailing rule")
        return uniform_time_chain(schedule, N)
    if spacing == "logsnr":
        return uniform_logsnr_chain(schedule, N, **kw)
    if spacing == "karras":
        return karras_chain(schedule, N, **kw)
    return ays_chain(spacing.split("-", 1)[1], N, schedule)
