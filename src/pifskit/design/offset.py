"""Criterion I, finest end: the schedule offset whose first noisy level releases the quantisation bin.

The first noisy level of a T-step schedule (t_1 = 1/T) has VP noise s_1 = sqrt(1 - alpha_bar(1/T)); the
criterion sets s_1 to the quantisation bin 2 / (2^B - 1) of B-bit data in [-1, 1]. For the cosine schedule,
theta = (t + s) / (1 + s) pi/2,

    s_1^2 = sin(theta_1 - theta_0) sin(theta_1 + theta_0) / cos^2(theta_0),

increasing in s, so the root is unique. See docs/design.md#i-release-alignment-finest-end-the-cosine-offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

from .._validate import PifsError, check_choice, check_int_range, check_positive_int
from ..schedules import (
    CosineSchedule,
    DiscreteSchedule,
    Schedule,
    ShiftedCosineSchedule,
)

#: how the target noise is derived from the bit depth:
#: "bin": s_1 = bin width 2/(2^B - 1) (Nichol & Dhariwal's rule);
#: "bin-std": s_1 = bin / sqrt(12), the std of uniform quantisation noise.
TARGET_RULES = ("bin", "bin-std")


def quantisation_bin(bits: int, rule: str = "bin") -> float:
    """Target first-level noise for B-bit data in [-1, 1]: 2 / (2^B - 1) ("bin") or that / sqrt(12) ("bin-std")."""
    B = check_int_range(bits, "bit depth", 1, 16)
    check_choice(rule, "target rule", TARGET_RULES)
    width = 2.0 / (2.0**B - 1.0)
    return width if rule == "bin" else width / np.sqrt(12.0)


def first_level_noise(schedule: Schedule, num_train_timesteps: int | None = None) -> float:
    """VP noise s_1 = sqrt(1 - alpha_bar) of the first noisy level t_1 = 1 / T (training timestep 0).

    For a :class:`DiscreteSchedule` T defaults to (and must equal) its own length.
    """
    if isinstance(schedule, DiscreteSchedule):
        T = schedule.num_train_timesteps if num_train_timesteps is None else check_positive_int(
            num_train_timesteps, "timesteps")
        if T != schedule.num_train_timesteps:
            raise PifsError(f"discrete schedule has T = {schedule.num_train_timesteps}, got timesteps={T}")
        return float(np.sqrt(1.0 - schedule.alphas_cumprod[0]))
    if not isinstance(schedule, Schedule):
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    T = check_positive_int(1000 if num_train_timesteps is None else num_train_timesteps, "timesteps")
    return float(schedule.s(1.0 / T))


def first_level_sigma(schedule: Schedule, num_train_timesteps: int | None = None) -> float:
    """VE sigma = s_1 / a_1 of the first noisy level (the release scale sqrt(lambda) it reaches)."""
    s1 = first_level_noise(schedule, num_train_timesteps)
    return float(s1 / np.sqrt(1.0 - s1**2))


def cosine_first_level_noise(offset, num_train_timesteps: int = 1000) -> np.ndarray:
    """Closed form s_1(s) for the cosine schedule (vectorised in the offset s)."""
    s = np.asarray(offset, dtype=np.float64)
    T = check_positive_int(num_train_timesteps, "timesteps")
    th0 = s / (1 + s) * (np.pi / 2)
    th1 = (1.0 / T + s) / (1 + s) * (np.pi / 2)
    return np.sqrt(np.sin(th1 - th0) * np.sin(th1 + th0)) / np.cos(th0)


def solve_first_level(family: Callable[[float], Schedule], target: float, lo: float, hi: float,
                      num_train_timesteps: int = 1000, name: str = "parameter") -> float:
    """The family parameter p in [lo, hi] with first_level_noise(family(p), T) = target (monotone families).

    Raises :class:`PifsError` if the target is outside the range the bracket reaches.
    """
    if not (np.isfinite(target) and 0 < target < 1):
        raise PifsError(f"target first-level noise must lie in (0, 1), got {target}")
    T = check_positive_int(num_train_timesteps, "timesteps")

    def g(p: float) -> float:
        return first_level_noise(family(p), T) - target

    g_lo, g_hi = g(lo), g(hi)
    if g_lo * g_hi > 0:
        reach = sorted([g_lo + target, g_hi + target])
        raise PifsError(f"no {name} in [{lo:g}, {hi:g}] gives first-level noise {target:.6g} at T = {T}; "
                        f"reachable: [{reach[0]:.6g}, {reach[1]:.6g}]")
    return float(brentq(g, lo, hi, xtol=1e-15, rtol=1e-13, maxiter=200))


@dataclass(frozen=True)
class OffsetDesign:
    """Result of :func:`cosine_offset_for_bits`."""

    offset: float
    first_noise: float        # VP s_1 of the derived schedule (= target)
    first_sigma: float        # VE sigma s_1 / a_1
    target: float
    bits: int
    num_train_timesteps: int
    rule: str
    published_offset: float = 0.008
    published_first_noise: float = float("nan")

    @property
    def schedule(self) -> CosineSchedule:
        """The derived cosine schedule (continuous; ``.discretize(T)`` for the T-step betas)."""
        return CosineSchedule(self.offset)

    def to_dict(self) -> dict:
        """The fields (``num_train_timesteps`` as "timesteps") and the ratio derived / published."""
        out = {("timesteps" if k == "num_train_timesteps" else k): v for k, v in asdict(self).items()}
        return {**out, "ratio_to_published": self.offset / self.published_offset}


def cosine_offset_for_bits(bits: int = 8, num_train_timesteps: int = 1000, rule: str = "bin") -> OffsetDesign:
    """Cosine offset s whose first noisy level has s_1 = the quantisation target of B-bit data.

    B = 8, T = 1000, rule "bin": s ~ 0.0121 (published: 0.008, which gives s_1 = 0.00643 < 1/127.5).
    """
    target = quantisation_bin(bits, rule)
    T = check_positive_int(num_train_timesteps, "timesteps")
    hi = 1.0 - 1.0 / T - 1e-9  # s_1(s) increases up to s = 1 - 1/T
    smax_reach = float(cosine_first_level_noise(hi, T))
    smin_reach = float(cosine_first_level_noise(0.0, T))
    if not smin_reach <= target <= smax_reach:
        raise PifsError(f"no cosine offset gives first-level noise {target:.6g} at T = {T} "
                        f"(reachable {smin_reach:.6g} .. {smax_reach:.6g}); change --timesteps or --bits")
    off = float(brentq(lambda s: float(cosine_first_level_noise(s, T)) - target, 0.0, hi, xtol=1e-15, rtol=1e-13))
    sched = CosineSchedule(off)
    return OffsetDesign(offset=off, first_noise=first_level_noise(sched, T), first_sigma=first_level_sigma(sched, T),
                        target=target, bits=int(bits), num_train_timesteps=T, rule=rule,
                        published_first_noise=float(cosine_first_level_noise(0.008, T)))


def shifted_cosine_shift_for_bits(bits: int = 8, num_train_timesteps: int = 1000, rule: str = "bin",
                                  logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> float:
    """The simple-diffusion logSNR shift whose first noisy level has s_1 = the quantisation target.

    An example of :func:`solve_first_level` on another family (s_1 decreases with the shift).
    """
    target = quantisation_bin(bits, rule)
    return solve_first_level(lambda p: ShiftedCosineSchedule(p, logsnr_min, logsnr_max), target, -30.0, 30.0,
                             num_train_timesteps, name="logSNR shift")
