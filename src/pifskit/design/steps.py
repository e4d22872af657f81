"""Criterion III, defect equidistribution: W2-optimal sampling steps (theory section 6 III).

For Gaussian data (eigenvalues lambda_k) the DDIM chain through VE levels sigma_0 > ... > sigma_M, started
from the exact marginal, scales direction k by prod_i cos(Delta psi_i), psi_i = atan(sigma_i / sqrt(lambda_k)):

    W2^2 = sum_k r_M(lambda_k)^2 (1 - prod_i cos(Delta psi_i(lambda_k)))^2,

r_M the true std at the last level (the theory's surrogate, ``start="marginal"``); :mod:`.solvers` gives the
output law of every solver and start law. :func:`optimal_steps` minimises either over the levels
(docs/design.md#iii-defect-equidistribution-the-sampling-steps and the sections after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from threadpoolctl import threadpool_limits

from .._validate import PifsError, as_float_array, check_choice, check_positive_int
from ..chains import (
    Chain,
    ays_chain,
    karras_chain,
    make_chain,
    sigma_range,
    uniform_logsnr_chain,
)
from ..schedules import (
    DiscreteSchedule,
    EDMSchedule,
    RectifiedFlowSchedule,
    Schedule,
    flow_t_from_sigma,
    logsnr_from_sigma,
)
from ..spectra import Spectrum
from ._binning import DEFAULT_MAX_BINS, compress_spectrum
from .baselines import ays_model_for, baseline_levels, design_range, starts_from_noise
from .level_spectrum import LevelSpectra
from .solvers import SOLVERS, START_LAWS, solver_kl, solver_sw2sq, solver_w2sq, sw2_standard_error, sw2_weights

START_MODES = START_LAWS  # "prior" (VP N(0, I)), "prior-ve" (VE N(0, sigma_0^2)), "marginal" (the theory's)
#: spectrum bins of the solver-aware criterion (binned vs exact W2 agree to ~1e-4; see tests)
SOLVER_MAX_BINS = 128
#: design criteria: "w2" per-direction W2 (sum over eigen-directions), "sw2" sliced W2 (mean over unit projections)
METRICS = ("w2", "sw2")
#: fixed projections (seed 0) of the sliced-W2 criterion
SW2_PROJECTIONS = 1024
#: solvers that reuse past denoiser outputs (the min-gap floor applies to them only)
MULTISTEP = ("dpmpp2m", "dpmpp3m", "ipndm")
#: smallest log-sigma gap of a free level, as a fraction of log(sigma_max/sigma_min) / N (see optimal_steps)
MIN_GAP = 0.5
#: objective value of a rejected trial point (a float tie of levels) under SW2^2 / (the best start's SW2^2)
_REJECT_SW2 = 1e6


def _start_gain(sigma0: float, lam: np.ndarray, start: str) -> np.ndarray:
    """1 / r_start(lambda): 1 for "marginal"; sqrt((1 + sigma_0^2) / (lambda + sigma_0^2)) for "prior" (N(0, I)
    in VP units); sqrt(sigma_0^2 / (lambda + sigma_0^2)) for "prior-ve"."""
    if start == "marginal" or not np.isfinite(sigma0):
        return np.ones_like(lam)
    if start == "prior-ve":
        return np.sqrt(sigma0**2 / (lam + sigma0**2))
    return np.sqrt((1.0 + sigma0**2) / (lam + sigma0**2))


def _w2sq(sigmas: np.ndarray, lam: np.ndarray, count: np.ndarray, start: str = "marginal") -> float:
    """W2^2 for VE levels ``sigmas`` (noisiest first; may start at inf, end at 0)."""
    root = np.sqrt(lam)
    psi = np.arctan2(sigmas[:, None], root[None, :])  # inf -> pi/2, 0 -> 0
    prod = np.prod(np.cos(psi[:-1] - psi[1:]), axis=0) * _start_gain(float(sigmas[0]), lam, start)
    s_end = sigmas[-1]
    a2_end = 1.0 / (1.0 + s_end**2)
    r2 = count * a2_end * (lam + s_end**2)
    return float(np.sum(r2 * (1.0 - prod) ** 2))


def w2_of_sigmas(sigmas, spectrum: Spectrum, max_bins: int = DEFAULT_MAX_BINS, start: str = "marginal") -> float:
    """W2 (not squared) of the DDIM chain through VE ``sigmas`` (noisiest first, strictly decreasing).

    ``start``: "marginal" (exact marginal at sigma_0; the theory's surrogate) or "prior" (N(0, I) in VP
    units at sigma_0, as samplers start; penalises chains that start below the noisiest level).
    """
    check_choice(start, "start", START_MODES)
    sig = as_float_array(sigmas, "sigmas", ndim=1, allow_inf=True)
    if sig.size < 2:
        raise PifsError("need at least 2 levels (1 step)")
    if (sig < 0).any() or not (np.diff(sig) < 0).all():
        raise PifsError("sigmas must be >= 0 and strictly decreasing (noisiest first)")
    lam, count, _ = compress_spectrum(spectrum, max_bins)
    return float(np.sqrt(_w2sq(sig, lam, count, start)))


def w2_surrogate(chain: Chain, spectrum: Spectrum, max_bins: int = DEFAULT_MAX_BINS,
                 start: str = "marginal") -> float:
    """W2 of a :class:`~pifskit.chains.Chain` under the Gaussian surrogate of ``spectrum`` (:func:`w2_of_sigmas`)."""
    return w2_of_sigmas(chain.sigmas, spectrum, max_bins, start)


def _levels_from_z(z: np.ndarray, u0: float, D: float) -> tuple[np.ndarray, np.ndarray]:
    """Free log-sigmas u_1..u_{N-1} and the softmax weights p (length N = z.size)."""
    p = softmax(z)
    u = u0 - D * np.cumsum(p[:-1])
    return u, p


def _objective(z: np.ndarray, u0: float, D: float, tail: np.ndarray, lam: np.ndarray, w: np.ndarray,
               norm: float, gain: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """W2^2 / norm and its gradient in z.

    Levels: u0, the free u (N - 1), then ``tail`` (log-sigmas appended after the
    free levels: [] or [log sigma_min]) and the clean endpoint (psi = 0). ``gain``: the start factor
    1 / r_start (:func:`_start_gain`; None = 1).
    """
    u, p = _levels_from_z(z, u0, D)
    logsig = np.concatenate([[u0], u, tail])
    root = np.sqrt(lam)
    psi = np.arctan(np.exp(logsig)[:, None] / root[None, :])          # (M, K), M noisy levels
    psi = np.vstack([psi, np.zeros((1, lam.size))])                   # clean endpoint
    dpsi = psi[:-1] - psi[1:]                                         # (M, K) steps
    c = np.cos(dpsi)
    sn = np.sin(dpsi)
    # exclusive products prod_{i != j} cos(dpsi_i) by prefix/suffix cumprod (no division by cos)
    ones = np.ones((1, lam.size))
    pre = np.cumprod(np.vstack([ones, c[:-1]]), axis=0)
    suf = np.cumprod(np.vstack([c[1:], ones])[::-1], axis=0)[::-1]
    excl = pre * suf
    g = np.ones(lam.size) if gain is None else gain
    P = pre[-1] * c[-1] * g
    resid = 1.0 - P
    E = float(np.sum(w * resid**2)) / norm
    # dP/d psi_j = -(sin dpsi_j excl_j) + (sin dpsi_{j-1} excl_{j-1})
    dP_ddpsi = -sn * excl * g                                              # dP / d dpsi_i
    n_free = u.size
    # free level j (1..n_free) appears in dpsi_{j-1} (as -psi_j) and dpsi_j (as +psi_j)
    dP_dpsi = dP_ddpsi[1:n_free + 1] - dP_ddpsi[0:n_free]
    dE_dpsi = (-2.0 * w * resid)[None, :] * dP_dpsi / norm             # (n_free, K)
    dE_du = np.sum(dE_dpsi * 0.5 * np.sin(2.0 * psi[1:n_free + 1]), axis=1)
    # u_j = u0 - D * sum_{i<j} p_i: dE/dp_i = -D * sum_{j>=i} dE/du_j (i < N-1), 0 for the slack
    dE_dp = np.zeros(z.size)
    dE_dp[:n_free] = -D * np.cumsum(dE_du[::-1])[::-1]
    grad = p * (dE_dp - np.dot(p, dE_dp))
    return E, grad


def gaussian_optimal_sigmas(sigma_max: float, n_levels: int, c: float, sigma_end: float = 0.0) -> np.ndarray:
    """Closed form for one variance c^2: n_levels levels uniform in atan(sigma / c) from sigma_max towards sigma_end.

    With ``sigma_end = 0`` the levels are c tan(psi_0 (N - i) / N), i = 0..N-1 (the
    N-th step lands on 0); with ``sigma_end = sigma_min`` they are uniform from
    psi(sigma_max) to psi(sigma_min) inclusive (n_levels - 1 steps).
    """
    n = check_positive_int(n_levels, "levels")
    psi0, psi1 = np.arctan(sigma_max / c), np.arctan(sigma_end / c)
    if sigma_end == 0.0:
        frac = (n - np.arange(n)) / n
    else:
        frac = (n - 1 - np.arange(n)) / max(n - 1, 1)
    return c * np.tan(psi1 + (psi0 - psi1) * frac)


def _z_from_logsig(u0: float, free_u: np.ndarray, D: float) -> np.ndarray:
    gaps = -np.diff(np.concatenate([[u0], free_u]))
    slack = D - gaps.sum()
    allg = np.concatenate([gaps, [slack]])
    allg = np.maximum(allg, 1e-9 * D)
    return np.log(allg / allg.sum())


@dataclass(frozen=True, eq=False)
class StepDesign:
    """Result of :func:`optimal_steps`.

    ``sigmas``: VE levels, noisiest first, ending with 0.0 (diffusers' ``sigmas=``; the first is inf for a
    schedule that starts from pure noise); ``timesteps``: integer training timesteps of the noisy levels
    for a discrete schedule (strictly decreasing, unique), else None; ``w2``: W2 of ``sigmas`` under the
    design's metric (``solver``, ``start``); ``w2_timesteps``: the same for the chain through the integer
    timesteps; ``flow_sigmas``: t' = sigma/(1 + sigma) of the noisy levels (flow units, first 1.0) for a
    rectified-flow schedule, and ``flow_sigmas_unshifted`` the values to hand to diffusers'
    FlowMatchEulerDiscreteScheduler ``set_timesteps(sigmas=...)``, which applies its shift on top;
    ``baselines``: name -> {"sigmas", "w2", "sw2"} scored under the same solver and start;
    ``metric``: the criterion minimised ("w2" or "sw2"): the design's value of that metric is <= each
    baseline's (start "prior"/"prior-ve"); ``sw2``: the sliced W2 of ``sigmas`` (always reported) and
    ``sw2_se`` the Monte-Carlo standard error of that estimate (its fixed projections).
    """

    sigmas: np.ndarray
    timesteps: np.ndarray | None
    w2: float
    w2_timesteps: float | None
    chain: Chain
    timestep_chain: Chain | None
    fixed_endpoints: bool
    sigma_min: float
    sigma_max: float
    iterations: int
    converged: bool
    meta: dict = field(default_factory=dict)
    solver: str = "ddim"
    start: str = "prior"
    kl: float | None = None
    flow_sigmas: np.ndarray | None = None
    flow_sigmas_unshifted: np.ndarray | None = None
    flow_shift: float | None = None
    baselines: dict = field(default_factory=dict)
    metric: str = "w2"
    sw2: float | None = None
    sw2_se: float | None = None
    sw2_timesteps: float | None = None

    @property
    def n_steps(self) -> int:
        return int(self.sigmas.size - 1)

    def to_dict(self) -> dict:
        def lst(x):
            return None if x is None else [float(v) for v in x]

        return {
            "sigmas": lst(self.sigmas),
            "timesteps": None if self.timesteps is None else [int(t) for t in self.timesteps],
            "solver": self.solver,
            "start": self.start,
            "landing": "N noisy levels, then the solver's own last step to sigma = 0 (every baseline alike)",
            "metric": self.metric,
            "w2": self.w2,
            "sw2": self.sw2,
            "sw2_mc_se": self.sw2_se,
            "kl": self.kl,
            "w2_timesteps": self.w2_timesteps,
            "sw2_timesteps": self.sw2_timesteps,
            "flow_sigmas": lst(self.flow_sigmas),
            "flow_sigmas_unshifted": lst(self.flow_sigmas_unshifted),
            "flow_shift": self.flow_shift,
            "n_steps": self.n_steps,
            "fixed_endpoints": self.fixed_endpoints,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "iterations": self.iterations,
            "converged": self.converged,
            "source": self.meta.get("source", "optimiser"),
            "baselines": {k: {"sigmas": lst(v["sigmas"]), "w2": v["w2"], "sw2": v.get("sw2")}
                          for k, v in self.baselines.items()},
        }


def _groups(spectrum, max_bins: int) -> tuple:
    """(lam, count) the solvers take: a per-level model itself (its own K direction groups), else the
    spectrum's distinct values or log-lambda bins (:func:`~pifskit.design._binning.compress_spectrum`)."""
    if isinstance(spectrum, LevelSpectra):
        return spectrum, spectrum.count
    return compress_spectrum(spectrum, max_bins)[:2]


def _sw2_proj(spectrum, count: np.ndarray, n_projections: int = SW2_PROJECTIONS) -> np.ndarray:
    """Bin weights of the sliced-W2 projections (:func:`~pifskit.design.solvers.sw2_weights`, seed 0); a
    Spectrum's zero eigenvalues (dropped by the binning) still dilute each unit projection."""
    null = 0.0 if isinstance(spectrum, LevelSpectra) else float(spectrum.d - np.sum(count))
    return sw2_weights(count, n_projections, seed=0, null=max(null, 0.0))


def _dist2(solver: str, sigmas, lam, count, start: str, grad: bool = False, proj: np.ndarray | None = None):
    """The design's squared distance: per-direction W2^2 (``proj`` None) or sliced SW2^2 with bin weights ``proj``."""
    if proj is None:
        return solver_w2sq(solver, sigmas, lam, count, start, grad=grad)
    return solver_sw2sq(solver, sigmas, lam, proj, start, grad=grad)


def _metric_norm(lam, count, proj: np.ndarray | None, scale: float | None = None) -> float:
    """Scale of the objective: the data's total variance (W2^2), or ``scale`` (SW2^2: the best start's value, so
    the optimiser's tolerances are relative -- SW2^2 / projected variance reaches 1e-8 at N = 10), else the mean
    projected variance."""
    ref = _reference_variances(lam)
    if proj is None:
        return float(np.sum(count * ref))
    return float(scale) if scale else float(np.mean(proj @ ref))


def score_levels(sigmas, spectrum: Spectrum, solver: str = "ddim", start: str = "prior",
                 max_bins: int = SOLVER_MAX_BINS, metric: str = "w2",
                 projections: int = SW2_PROJECTIONS) -> float:
    """W2 (``metric="w2"``) or sliced W2 (``"sw2"``, ``projections`` fixed unit directions, seed 0) of the
    chain through ``sigmas`` (noisy levels, then 0; the first may be inf) run by ``solver`` on the Gaussian
    of ``spectrum``, started from ``start`` (:mod:`pifskit.design.solvers`)."""
    check_choice(solver, "solver", SOLVERS)
    check_choice(start, "start", START_MODES)
    check_choice(metric, "metric", METRICS)
    lam, count = _groups(spectrum, max_bins)
    proj = _sw2_proj(spectrum, count, projections) if metric == "sw2" else None
    return float(np.sqrt(_dist2(solver, np.asarray(sigmas, float), lam, count, start, proj=proj)))


def _delta(n_gaps: int, min_gap: float, first: bool = False) -> np.ndarray:
    """Floors of the gap fractions: min_gap / n_gaps for the gaps *between* levels, 0 for the slack below
    the last and (``first=False``) for the gap above the first free level when that is not a level (a free
    sigma_0, or sigma_0 = inf); capped so the floors sum to <= 1/2."""
    dl = np.zeros(n_gaps)
    lo = 0 if first else 1
    if min_gap > 0 and n_gaps - 1 > lo:
        dl[lo:-1] = min(min_gap / n_gaps, 0.5 / n_gaps)
    return dl


def _reference_variances(lam) -> np.ndarray:
    """Per-direction variances for normalising and the closed-form start: lambda, or a level model's t_k^2."""
    return lam.target_variance() if isinstance(lam, LevelSpectra) else lam


def _spread(x: np.ndarray, lo, hi, eps) -> np.ndarray:
    """``x`` made strictly decreasing by steps >= eps inside [lo, hi], moving as little as possible: top down
    x_i <= min(x_{i-1} - eps, hi), then bottom up x_i >= max(x_{i+1} + eps, lo)."""
    k = np.arange(x.size)
    x = np.minimum.accumulate(np.minimum(x, hi) + eps * k) - eps * k
    return (np.maximum.accumulate(np.maximum(x[::-1], lo) - eps * k) + eps * k)[::-1]


def _untie(noisy: np.ndarray, smin: float, smax: float) -> np.ndarray:
    """Spread float ties in log sigma (only reachable for very large N): strictly decreasing, inside [smin, smax]."""
    lo, hi = np.log(smin), np.log(smax)
    eps = min(1e-9 * max(hi - lo, 1.0), (hi - lo) / (4.0 * noisy.size))
    out = np.exp(_spread(np.log(np.clip(noisy, smin, smax)), lo, hi, eps))
    out[0], out[-1] = min(out[0], smax), max(out[-1], smin)  # exp(log x) may round past an endpoint
    return out


def rms_log_sigma(a, b) -> float:
    """RMS of log(a_i / b_i) over the positive (noisy) levels both lists share, position by position."""
    x = as_float_array(a, "sigmas a", ndim=1)
    y = as_float_array(b, "sigmas b", ndim=1)
    x, y = x[x > 0], y[y > 0]
    if x.size != y.size or x.size == 0:
        raise PifsError(f"need the same number of noisy levels, got {x.size} and {y.size}")
    return float(np.sqrt(np.mean(np.log(x / y) ** 2)))


def baseline_chains(schedule: Schedule, steps: int) -> dict[str, Chain]:
    """The comparison chains at N steps, all landing clean: trailing, leading (discrete), uniform
    logSNR, Karras rho = 7, and the published AYS lists where the schedule matches."""
    N = check_positive_int(steps, "steps")
    out: dict[str, Chain] = {}
    discrete = isinstance(schedule, DiscreteSchedule)
    if discrete:
        out["trailing"] = make_chain(schedule, N, "trailing")
        out["leading"] = make_chain(schedule, N, "leading")
    else:
        out["uniform-t"] = make_chain(schedule, N, "uniform")
    out["uniform-logsnr"] = uniform_logsnr_chain(schedule, N)
    out["karras-rho7"] = karras_chain(schedule, N, 7.0)
    for model in ays_model_for(schedule):
        out[f"ays-{model}"] = ays_chain(model, N, schedule)
    return out


def repair_timesteps(timesteps, num_train_timesteps: int) -> np.ndarray:
    """Make integer timesteps strictly decreasing and unique inside [0, T - 1], moving as few as possible.

    Pass 1 (top down): t_i <= min(t_{i-1} - 1, T - 1); pass 2 (bottom up): t_i >= t_{i+1} + 1, t_last >= 0.
    Deterministic; needs len <= T.
    """
    ts = np.asarray(np.round(timesteps), dtype=np.int64)
    T = check_positive_int(num_train_timesteps, "num_train_timesteps")
    if ts.size > T:
        raise PifsError(f"cannot place {ts.size} unique timesteps in 0..{T - 1}")
    return _spread(ts, 0, T - 1, 1).copy()


def timesteps_from_sigmas(schedule: DiscreteSchedule, sigmas) -> np.ndarray:
    """Integer training timesteps of VE levels: round(diffusers' log-sigma interpolation), then repaired."""
    sig = as_float_array(sigmas, "sigmas", ndim=1)
    return repair_timesteps(np.round(schedule.timestep_of_sigma(sig)), schedule.num_train_timesteps)


def _descend_timesteps(ts: np.ndarray, cost, T: int, first: int, allowed, max_sweeps: int) -> np.ndarray:
    """Integer coordinate descent on ``cost``: moves of +-1 of ts[first:], order and uniqueness kept,
    a move of ts[i] taken only where ``allowed(ts, trial, i)``; stops when a sweep improves nothing."""
    ts = ts.copy()
    best = cost(ts)
    for _ in range(max_sweeps):
        improved = False
        for i in range(first, ts.size):
            for move in (-1, 1):
                cand = ts[i] + move
                hi = ts[i - 1] - 1 if i > 0 else T - 1
                lo = ts[i + 1] + 1 if i + 1 < ts.size else 0
                if not lo <= cand <= hi:
                    continue
                trial = ts.copy()
                trial[i] = cand
                if not allowed(ts, trial, i):
                    continue
                c = cost(trial)
                if c < best - 1e-12 * max(best, 1.0):
                    ts, best, improved = trial, c, True
                    break
        if not improved:
            break
    return ts


def _levels_of(z: np.ndarray, u_max: float, D: float, min_gap: float = 0.0,
               first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Free VE levels from logits z (L + 1 entries: L free gaps and a slack):
    u_j = u_max - D cumsum(q)_j, q = delta + (1 - (L + 1) delta) softmax(z) (every gap >= delta D)."""
    p = softmax(z)
    dl = _delta(z.size, min_gap, first)
    q = dl + (1.0 - dl.sum()) * p
    return np.exp(u_max - D * np.cumsum(q[:-1])), p


def _z_of(free: np.ndarray, u_max: float, D: float, min_gap: float = 0.0) -> np.ndarray:
    """Logits of the free levels ``free`` (the inverse of :func:`_levels_of`, kept strictly inside)."""
    gaps = -np.diff(np.concatenate([[u_max], np.log(free)]))
    allg = np.concatenate([gaps, [D - gaps.sum()]]) / D
    dl = _delta(allg.size, min_gap)
    # start strictly inside: a gap at 0 (e.g. a baseline starting at sigma_max) would saturate the softmax
    allg = np.maximum((allg - dl) / (1.0 - dl.sum()), 1e-3 / allg.size)
    return np.log(allg / allg.sum())


def _solver_objective(z, u_max, D, head, solver, lam, count, start, norm, min_gap=0.0, proj=None):
    """The design's metric (:func:`_dist2`) of the levels [head, free levels of z, 0] / norm, and its gradient in z.

    ``head``: None (sigma_0 is the first free level), inf (pure-noise start) or sigma_max (sigma_0 fixed)."""
    fixed = head is not None and bool(np.isfinite(head))
    lev, p = _levels_of(z, u_max, D, min_gap, fixed)
    sig = lev if head is None else np.concatenate([[head], lev])
    if not (np.diff(sig) < 0).all():  # a float tie (a gap underflowed): reject the trial point
        # W2^2 / trace <= (1 + start factor)^2-ish; any value above the start's (SW2^2 is scaled by its best start)
        return (4.0 if proj is None else _REJECT_SW2), np.zeros(z.size)
    val, g = _dist2(solver, np.concatenate([sig, [0.0]]), lam, count, start, grad=True, proj=proj)
    dE_dp = np.zeros(z.size)
    dE_dp[:-1] = -D * np.cumsum((g if head is None else g[1:])[::-1])[::-1]
    dE_dp *= 1.0 - _delta(z.size, min_gap, fixed).sum()
    return val / norm, p * (dE_dp - np.dot(p, dE_dp)) / norm


def _optimise_solver(smin: float, smax: float, N: int, head: float | None, solver: str, lam, count: np.ndarray,
                     start: str, candidates: list, maxiter: int, min_gap: float = 0.0,
                     proj: np.ndarray | None = None, scale: float | None = None) -> tuple[np.ndarray, int, bool]:
    """The N noisy levels minimising the design's metric in [sigma_min, sigma_max]; (levels, iterations, converged).

    ``head`` as in :func:`_solver_objective`. Starts: every candidate of N levels that fits (moved inside the
    range), scored; L-BFGS-B from the best two (one above N = 20), BLAS single-threaded (see :func:`_optimise`).
    """
    if N == 1 and head is not None:
        return np.array([head]), 0, True
    u_max, D = float(np.log(smax)), float(np.log(smax / smin))
    fixed = head is not None and bool(np.isfinite(head))
    top = smax * (1 - 1e-12) if fixed else smax
    args = (u_max, D, head, solver, lam, count, start, _metric_norm(lam, count, proj, scale), min_gap, proj)
    best = None
    with threadpool_limits(limits=1, user_api="blas"):
        scored = []
        for cand in candidates:
            cand = np.asarray(cand, float)
            if cand.size != N or np.isinf(cand[0]) != (head == np.inf) or (fixed and not np.isfinite(cand).all()):
                continue
            free = np.clip(cand if head is None else cand[1:], smin, top)
            if not (np.diff(free) < 0).all():
                free = _untie(free, smin, top)
            z = _z_of(free, u_max, D, min_gap)
            scored.append((_solver_objective(z, *args)[0], z))
        scored.sort(key=lambda t: t[0])
        for _, z0 in scored[:2 if N <= 20 else 1]:
            res = minimize(_solver_objective, z0, args=args, jac=True, method="L-BFGS-B",
                           options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 20})
            if best is None or res.fun < best.fun:
                best = res
    lev, _ = _levels_of(best.x, u_max, D, min_gap, fixed)
    return (lev if head is None else np.concatenate([[head], lev])), int(best.nit), bool(best.success)


def _optimise(sigma_max: float, sigma_min: float, n: int, fixed: bool, lam: np.ndarray, w: np.ndarray,
              maxiter: int, start: str = "marginal") -> tuple[np.ndarray, int, bool]:
    """The N - 1 free VE levels (descending) minimising the angle-form W2^2 (:func:`_objective`); (levels,
    iterations, converged). Starts: the one-variance closed form at the W2-weighted geometric-mean variance
    and (N <= 100) uniform log sigma.

    The matrices are small (levels x spectrum bins): a multi-threaded BLAS only adds synchronisation (~20x
    slower on a loaded machine), so BLAS runs single-threaded.
    """
    if n == 1:
        return np.zeros(0), 0, True
    u0 = float(np.log(sigma_max))
    D = float(np.log(sigma_max / sigma_min))
    tail = np.array([np.log(sigma_min)]) if fixed else np.zeros(0)
    norm = float(w.sum())
    c = float(np.exp(np.sum(w * np.log(lam)) / norm) ** 0.5)
    if fixed:
        g = gaussian_optimal_sigmas(sigma_max, n + 1, c, sigma_min)[1:n]
    else:
        g = gaussian_optimal_sigmas(sigma_max, n, c, 0.0)[1:]
    starts = [np.log(np.clip(g, sigma_min, sigma_max))]
    if n <= 100:  # a second start guards against a poor closed-form start; cheap at small N
        starts.append(np.linspace(u0, u0 - D, n + (1 if fixed else 0))[1:n])
    best = None
    with threadpool_limits(limits=1, user_api="blas"):
        for free_u in starts:
            # keep the start strictly inside: repair ties produced by clipping
            free_u = np.minimum.accumulate(np.minimum(free_u, u0 - 1e-6 * D * np.arange(1, n)))
            free_u = np.maximum(free_u, u0 - D + 1e-6 * D * np.arange(n - 1, 0, -1))
            res = minimize(_objective, _z_from_logsig(u0, free_u, D), jac=True, method="L-BFGS-B",
                           args=(u0, D, tail, lam, w, norm, _start_gain(sigma_max, lam, start)),
                           options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20})
            if best is None or res.fun < best.fun - 1e-14:
                best = res
    u, _ = _levels_from_z(best.x, u0, D)
    return np.exp(u), int(best.nit), bool(best.success)


def _range(default: tuple[float, float], sigma_min, sigma_max) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the design: ``default`` unless given; PifsError if empty."""
    smin = float(default[0] if sigma_min is None else sigma_min)
    smax = float(default[1] if sigma_max is None else sigma_max)
    if not (np.isfinite(smin) and np.isfinite(smax) and 0 < smin < smax):
        raise PifsError(f"empty optimisation: need 0 < sigma_min < sigma_max (finite), got "
                        f"sigma_min={smin:g}, sigma_max={smax:g}")
    return smin, smax


def _design(schedule: Schedule, sig: np.ndarray, name: str, *, solver: str, start: str, lam, count, W: np.ndarray,
            score, dist2, refine_max: int, first: int, max_sweeps: int, baselines: dict, metric: str,
            gap_floor: float = 0.0, **fields) -> StepDesign:
    """The :class:`StepDesign` of the levels ``sig`` (noisy levels, then 0).

    ``score``: the reported W2 of a list of levels. For a discrete schedule, integer timesteps: rounded,
    repaired, then (N <= ``refine_max``) an integer coordinate descent on ``dist2`` of the timestep chain
    moving ts[first:] (:func:`_descend_timesteps`); a move may not shrink a gap in log sigma below
    ``gap_floor`` (the multistep solvers' floor, as in the continuous optimum). Adds the KL, the sliced W2 (bin
    weights ``W``) of the design, its timestep chain and any baseline without one, and (rectified flow) the
    flow-unit levels.
    """
    noisy = sig[:-1][np.isfinite(sig[:-1])]
    chain = Chain(logsnr_from_sigma(sig), name=name)
    ts = ts_chain = w2_ts = sw2_ts = None
    if isinstance(schedule, DiscreteSchedule):
        ts = timesteps_from_sigmas(schedule, noisy)
        if ts.size <= refine_max:
            table = schedule.sigmas_table
            log_table = np.log(table)

            def allowed(now: np.ndarray, trial: np.ndarray, i: int) -> bool:
                if not np.isfinite(table[trial[i]]):
                    return False
                j = slice(max(i - 1, 0), i + 2)  # the gaps on both sides of level i, before and after the move
                new, old = -np.diff(log_table[trial[j]]), -np.diff(log_table[now[j]])
                return bool(np.all((new >= gap_floor) | (new >= old)))

            ts = _descend_timesteps(ts, lambda t: dist2(np.concatenate([table[t], [0.0]])),
                                    schedule.num_train_timesteps, first, allowed, max_sweeps)
        ts_chain = Chain.from_timesteps(schedule, ts, set_alpha_to_one=True, name=f"{name}-timesteps")
        w2_ts = score(ts_chain.sigmas)
        sw2_ts = float(np.sqrt(solver_sw2sq(solver, ts_chain.sigmas, lam, W, start)))
        chain = Chain(chain.logsnr, timesteps=schedule.timestep_of_sigma(noisy), name=name)
    sw2 = float(np.sqrt(solver_sw2sq(solver, sig, lam, W, start)))
    se = sw2_standard_error(solver, sig, lam, W, start) / (2.0 * sw2) if sw2 > 0 else None
    for b in baselines.values():
        if "sw2" not in b:
            b["sw2"] = float(np.sqrt(solver_sw2sq(solver, np.asarray(b["sigmas"], float), lam, W, start)))
    flow = unshifted = shift = None
    if isinstance(schedule, RectifiedFlowSchedule):
        flow = flow_t_from_sigma(sig[:-1])
        shift = schedule.shift
        unshifted = flow / (shift - (shift - 1.0) * flow)  # inverse of t' = s t / (1 + (s - 1) t)
    return StepDesign(sigmas=sig, timesteps=ts, w2=score(sig), w2_timesteps=w2_ts, chain=chain,
                      timestep_chain=ts_chain, solver=solver, start=start, kl=solver_kl(solver, sig, lam, count, start),
                      flow_sigmas=flow, flow_sigmas_unshifted=unshifted, flow_shift=shift, baselines=baselines,
                      metric=metric, sw2=sw2, sw2_se=se, sw2_timesteps=sw2_ts, **fields)


def optimal_steps(schedule: Schedule, spectrum: Spectrum, steps: int, *, solver: str = "ddim",
                  start: str | None = None, fixed_endpoints: bool = False,
                  sigma_min: float | None = None, sigma_max: float | None = None,
                  max_bins: int | None = None, refine_timesteps: bool = True,
                  maxiter: int = 5000, baselines: bool = True, min_gap: float = MIN_GAP,
                  extra_baselines: dict | None = None, free_start: bool = False, metric: str = "w2",
                  projections: int = SW2_PROJECTIONS) -> StepDesign:
    """The N sampling levels minimising the closed-form W2 of ``solver`` on the Gaussian of ``spectrum``.

    ``steps`` = N noisy levels, then the solver's own last step to sigma = 0 (every baseline alike).
    ``metric``: "w2" -- W2^2 = sum_k (sqrt(lambda_k) - |m_k|)^2 of the solver's output law N(0, diag m^2);
    "sw2" -- its sliced W2, SW2^2 = E_u (sqrt(sum_k u_k^2 m_k^2) - sqrt(sum_k u_k^2 lambda_k))^2 over
    ``projections`` fixed unit directions (seed 0; Monte-Carlo error reported as ``sw2_se``). Baselines and
    the integer-timestep refinement are scored with the same metric. ``spectrum`` may be a
    :class:`~pifskit.design.level_spectrum.LevelSpectra` (a model's per-level linear model; no binning).

    ``start`` (default "prior-ve" for an EDM schedule, else "prior"): "prior" / "prior-ve" -- the sampler's
    N(0, I) (VP units; VE N(0, sigma_0^2)) at sigma_0 = sigma_max (inf for a schedule reaching pure noise),
    or free in [sigma_min, sigma_max] with ``free_start``; "marginal" -- the theory's surrogate (exact marginal
    at sigma_0 = sigma_max), with ddim and metric "w2" the original angle-form criterion, the only one that
    allows ``fixed_endpoints`` (N + 1 levels, sigma_N = sigma_min, then 0). The result's metric is <= each
    baseline's under the charged starts: if a baseline scores lower, its levels are returned and
    ``meta["source"]`` names it.

    ``min_gap`` (multistep solvers only; 0 = off): every level at least about min_gap log(sigma_max/sigma_min)
    / N below the one above it, so near-duplicate levels cannot exploit the exact linear denoiser.
    Endpoints: :func:`~pifskit.design.baselines.design_range` (theory variant: :func:`~pifskit.chains.sigma_range`).
    Discrete schedules: integer ``timesteps`` (rounded, repaired, refined by coordinate descent).
    See docs/design.md#iii-for-every-solver-the-charged-start-flow-models-issue-11.
    """
    if not isinstance(schedule, Schedule):
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    N = check_positive_int(steps, "steps")
    check_choice(solver, "solver", SOLVERS)
    if start is None:
        start = "prior-ve" if isinstance(schedule, EDMSchedule) else "prior"
    check_choice(start, "start", START_MODES)
    check_choice(metric, "metric", METRICS)
    level_model = isinstance(spectrum, LevelSpectra)
    theory = start == "marginal" and solver == "ddim" and not level_model and metric == "w2"
    if fixed_endpoints and not theory:
        raise PifsError("fixed_endpoints is the theory's convention: only with solver='ddim', start='marginal' "
                        "and metric='w2'")
    lam, count = _groups(spectrum, max_bins or (DEFAULT_MAX_BINS if theory else SOLVER_MAX_BINS))
    W = _sw2_proj(spectrum, count, projections)
    smin, smax = _range(sigma_range(schedule) if theory else design_range(schedule), sigma_min, sigma_max)
    extra = int(fixed_endpoints)
    if isinstance(schedule, DiscreteSchedule) and N + extra > schedule.num_train_timesteps:
        raise PifsError(f"steps must be <= {schedule.num_train_timesteps - extra} "
                        f"(T = {schedule.num_train_timesteps} training timesteps), got {N}")
    meta = {"bins": int(lam.size), "spectrum": spectrum.name, "start": start}
    common = dict(solver=solver, start=start, lam=lam, count=count, W=W, metric=metric, sigma_min=smin,
                  sigma_max=smax)
    if theory:
        total = compress_spectrum(spectrum, max_bins or DEFAULT_MAX_BINS)[2]  # weights: each group's eigenvalue sum
        free, nit, ok = _optimise(smax, smin, N, fixed_endpoints, lam, total, maxiter, start)
        noisy = np.concatenate([[smax], free, [smin] if fixed_endpoints else []])
        if not (np.diff(noisy) < 0).all():  # the softmax keeps levels ordered in exact arithmetic; guard float ties
            noisy = _untie(noisy, smin, smax)

        def w2(levels: np.ndarray) -> float:
            return float(np.sqrt(_w2sq(levels, lam, count, start)))

        base = {}
        if baselines and not fixed_endpoints:
            for name, levels in {**baseline_levels(schedule, N), **(extra_baselines or {})}.items():
                if np.isfinite(levels).all():
                    base[name] = {"sigmas": levels, "w2": w2_of_sigmas(levels, spectrum, max_bins or DEFAULT_MAX_BINS)}
        return _design(schedule, np.concatenate([noisy, [0.0]]), f"w2opt-{N}", score=w2,
                       dist2=lambda s: _w2sq(s, lam, count, start), refine_max=64 if refine_timesteps else 0,
                       first=1, max_sweeps=50, baselines=base, fixed_endpoints=bool(fixed_endpoints),
                       iterations=nit, converged=ok, meta=meta, **common)
    if solver not in MULTISTEP:  # one-step solvers cannot exploit near-duplicate levels: no floor
        min_gap = 0.0
    proj = W if metric == "sw2" else None
    pure = starts_from_noise(schedule)
    marginal = start == "marginal"

    def score(levels: np.ndarray) -> float:  # the per-direction W2 (always reported)
        return float(np.sqrt(solver_w2sq(solver, levels, lam, count, start)))

    def sscore(levels: np.ndarray) -> float:  # the sliced W2 (always reported)
        return float(np.sqrt(solver_sw2sq(solver, levels, lam, W, start)))

    base_levels = baseline_levels(schedule, N) if baselines else {}
    for name, lv in (extra_baselines or {}).items():  # e.g. a diffusers config's own set_timesteps(N)
        base_levels[name] = np.asarray(lv, dtype=float)
    base = {name: {"sigmas": lv, "w2": score(lv), "sw2": sscore(lv)} for name, lv in base_levels.items()}
    # candidate starts: one-variance closed form, uniform log sigma, and every baseline
    lam_ref = _reference_variances(lam)
    norm = float(np.sum(count * lam_ref))
    c = float(np.exp(np.sum(count * lam_ref * np.log(lam_ref)) / norm) ** 0.5)
    top = np.inf if pure else smax
    guess = gaussian_optimal_sigmas(smax, N, c, 0.0)
    uni = np.exp(np.linspace(np.log(smax), np.log(smin), N)) if N > 1 else np.array([smax])
    cands = []
    for g in (guess, uni):
        g = np.clip(g, smin, smax)
        cands.append(np.concatenate([[top], g[:-1]]) if (pure or marginal) and N > 1 else g)
    cands += [b["sigmas"][:-1] for b in base.values()]
    scale = w2_design = None
    if metric == "sw2":  # the criterion is not convex: the per-direction W2 optimum is one more start
        w2_design = optimal_steps(schedule, spectrum, N, solver=solver, start=start, sigma_min=sigma_min,
                                  sigma_max=sigma_max, max_bins=max_bins, refine_timesteps=False, maxiter=maxiter,
                                  baselines=False, min_gap=min_gap, free_start=free_start).sigmas
        cands.append(w2_design[:-1])
        vals = [solver_sw2sq(solver, np.concatenate([c, [0.0]]), lam, W, start) for c in cands
                if np.size(c) == N and (np.diff(c) < 0).all() and np.isfinite(c[1:]).all()]
        scale = min([v for v in vals if v > 0], default=None)
    # sigma_0: inf (pure noise), sigma_max (fixed, as samplers run the full range) or free
    head = np.inf if pure else (smax if marginal or not free_start else None)
    noisy, nit, ok = _optimise_solver(smin, smax, N, head, solver, lam, count, start, cands, maxiter, min_gap,
                                      proj, scale)
    sig = np.concatenate([noisy, [0.0]])
    val = {"w2": score(sig), "sw2": sscore(sig)}
    source = "optimiser"
    rivals = dict(base) if not marginal else {}
    if w2_design is not None:  # a local optimum of SW2 worse than the W2 design: keep the W2 design
        rivals["w2-design"] = {"sigmas": w2_design, "w2": score(w2_design), "sw2": sscore(w2_design)}
    for name, b in rivals.items():  # a baseline the optimiser could not improve on (float ties)
        if b[metric] < val[metric]:
            sig, val, source = np.asarray(b["sigmas"], float), {"w2": b["w2"], "sw2": b["sw2"]}, name
    # the optimiser's floor on a gap between levels, in log sigma (the gap fractions of _levels_of times D)
    floors = _delta(N + (head is None), min_gap, head is not None and bool(np.isfinite(head)))
    return _design(schedule, sig, f"w2opt-{solver}-{N}", score=score,
                   dist2=lambda s: _dist2(solver, s, lam, count, start, proj=proj),
                   refine_max=20 if refine_timesteps else 0, first=1 if marginal else 0, max_sweeps=20,
                   gap_floor=float(np.log(smax / smin) * np.max(floors, initial=0.0)), baselines=base,
                   fixed_endpoints=False, iterations=nit, converged=ok, meta={**meta, "source": source}, **common)
