"""Criterion III, defect equidistribution: W2-optimal sampling steps (theory section 6 III).

For Gaussian data with covariance eigenvalues lambda_k, a deterministic DDIM
chain visiting VE noise levels sigma_0 > sigma_1 > ... > sigma_M scales the
component along u_k by (r_M / r_0) prod_i cos(Delta psi_i(lambda_k)) with the
step angles

    psi_i(lambda) = atan(sigma_i / sqrt(lambda)),   Delta psi_i = psi_i - psi_{i+1}

(VE sigma = s / a, so this is exact in VP coordinates as well). Started from
the exact marginal at sigma_0, the sampler's law differs from the true one
only in the per-direction std, and its 2-Wasserstein error is in closed form

    W2^2 = sum_k r_M(lambda_k)^2 (1 - prod_i cos(Delta psi_i(lambda_k)))^2,

r_M the true std at the final level (VP: a_M^2 (lambda + sigma_M^2); sqrt(lambda)
when the chain lands clean, sigma_M = 0).

:func:`optimal_steps` minimises W2 over the free levels between the schedule's
endpoints. Conventions:

* ``fixed_endpoints=False`` (default, what diffusers runs with ``sigmas=[..., 0.0]``):
  N noisy levels sigma_0 = sigma_max (fixed) > sigma_1 > ... > sigma_{N-1} >= sigma_min
  (free), then a final step to 0: N steps.
* ``fixed_endpoints=True`` (the Align Your Steps paper's convention): N + 1 levels
  with sigma_N = sigma_min fixed as well, then the step to 0: N + 1 steps.

Parametrisation: the N - 1 free log-sigma gaps and one slack gap are
D * softmax(z), D = log(sigma_max / sigma_min), so every iterate is strictly
decreasing and inside [sigma_min, sigma_max]. The gradient is analytic:

    dW2^2/dpsi_j = 2 sum_k w_k (1 - P_k) [sin(Dpsi_j) prod_{i != j} cos(Dpsi_i)
                                        - sin(Dpsi_{j-1}) prod_{i != j-1} cos(Dpsi_i)],
    dpsi/dlog(sigma) = sin(2 psi) / 2,

and the spectrum is compressed to distinct values / log-lambda bins with
weights w = sum of r_M^2 in the bin, so 16k eigenvalues cost a few hundred.
For one variance lambda = c^2 the optimum is uniform in atan(sigma / c)
(concavity of log cos) -- the closed form Align Your Steps derived.
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
from ..schedules import DiscreteSchedule, Schedule
from ..spectra import Spectrum
from ._binning import DEFAULT_MAX_BINS, compress_spectrum

__all__ = [
    "START_MODES",
    "StepDesign",
    "ays_model_for",
    "baseline_chains",
    "gaussian_optimal_sigmas",
    "optimal_steps",
    "repair_timesteps",
    "rms_log_sigma",
    "timesteps_from_sigmas",
    "w2_of_sigmas",
    "w2_surrogate",
]


# ---------------------------------------------------------------------------
# the closed-form surrogate
# ---------------------------------------------------------------------------

START_MODES = ("marginal", "prior")


def _start_gain(sigma0: float, lam: np.ndarray, start: str) -> np.ndarray:
    """1 / r_start(lambda): the factor the product is compared with.

    "marginal": the chain starts from the exact marginal at sigma_0 (factor 1, the theory's surrogate);
    "prior": it starts from N(0, I) in VP units (what samplers do), so the per-direction start std is 1
    instead of r_0 = sqrt((lambda + sigma_0^2) / (1 + sigma_0^2)).
    """
    if start == "marginal" or not np.isfinite(sigma0):
        return np.ones_like(lam)
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


def w2_surrogate(chain: Chain, spectrum: Spectrum, max_bins: int = DEFAULT_MAX_BINS, start: str = "marginal") -> float:
    """W2 of a :class:`~pifskit.chains.Chain` under the Gaussian surrogate of ``spectrum`` (see :func:`w2_of_sigmas`)."""
    return w2_of_sigmas(chain.sigmas, spectrum, max_bins, start)


# ---------------------------------------------------------------------------
# the optimiser
# ---------------------------------------------------------------------------

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

    ``sigmas``: VE levels, noisiest first, ending with 0.0 (diffusers' ``sigmas=``);
    ``timesteps``: integer training timesteps of the noisy levels for a discrete
    schedule (strictly decreasing, unique), else None; ``w2``: surrogate W2 of
    ``sigmas``; ``w2_timesteps``: surrogate W2 of the chain through the
    integer timesteps (what a ``timesteps=`` sampler runs).
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

    @property
    def n_steps(self) -> int:
        return int(self.sigmas.size - 1)

    def to_dict(self) -> dict:
        return {
            "sigmas": self.sigmas.tolist(),
            "timesteps": None if self.timesteps is None else [int(t) for t in self.timesteps],
            "w2": self.w2,
            "w2_timesteps": self.w2_timesteps,
            "n_steps": self.n_steps,
            "fixed_endpoints": self.fixed_endpoints,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "iterations": self.iterations,
            "converged": self.converged,
        }


def _optimise(sigma_max: float, sigma_min: float, n: int, fixed: bool, lam: np.ndarray, w: np.ndarray,
              maxiter: int, start: str = "marginal") -> tuple[np.ndarray, int, bool]:
    """The N - 1 free VE levels (descending) minimising W2^2; (levels, iterations, converged).

    The problem's matrices are small (levels x spectrum bins): a multi-threaded BLAS only adds
    synchronisation, and on a loaded machine it made the optimiser ~20x slower, so BLAS runs
    single-threaded here.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _optimise_impl(sigma_max, sigma_min, n, fixed, lam, w, maxiter, start)


def _optimise_impl(sigma_max: float, sigma_min: float, n: int, fixed: bool, lam: np.ndarray, w: np.ndarray,
                   maxiter: int, start: str) -> tuple[np.ndarray, int, bool]:
    u0 = float(np.log(sigma_max))
    D = float(np.log(sigma_max / sigma_min))
    tail = np.array([np.log(sigma_min)]) if fixed else np.zeros(0)
    if n == 1:
        return np.zeros(0), 0, True
    norm = float(w.sum())
    # starts: the one-variance closed form at the W2-weighted geometric mean variance, and uniform log-sigma
    c = float(np.exp(np.sum(w * np.log(lam)) / norm) ** 0.5)
    if fixed:
        g = gaussian_optimal_sigmas(sigma_max, n + 1, c, sigma_min)[1:n]
    else:
        g = gaussian_optimal_sigmas(sigma_max, n, c, 0.0)[1:]
    g = np.clip(g, sigma_min, sigma_max)
    starts = [np.log(g)]
    if n <= 100:  # a second start (uniform log-sigma) guards against a poor closed-form start; cheap at small N
        starts.append(np.linspace(u0, u0 - D, n + (1 if fixed else 0))[1:n])
    best = None
    for free_u in starts:
        # keep the start strictly inside: repair ties produced by clipping
        free_u = np.minimum.accumulate(np.minimum(free_u, u0 - 1e-6 * D * np.arange(1, n)))
        free_u = np.maximum(free_u, u0 - D + 1e-6 * D * np.arange(n - 1, 0, -1))
        z0 = _z_from_logsig(u0, free_u, D)
        res = minimize(_objective, z0, args=(u0, D, tail, lam, w, norm, _start_gain(sigma_max, lam, start)), jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20})
        if best is None or res.fun < best.fun - 1e-14:
            best = res
    u, _ = _levels_from_z(best.x, u0, D)
    return np.exp(u), int(best.nit), bool(best.success)


def repair_timesteps(timesteps, num_train_timesteps: int) -> np.ndarray:
    """Make integer timesteps strictly decreasing and unique inside [0, T - 1], moving as few as possible.

    Pass 1 (top down): t_i <= min(t_{i-1} - 1, T - 1); pass 2 (bottom up): t_i >= t_{i+1} + 1, t_last >= 0.
    Deterministic; needs len <= T.
    """
    ts = np.asarray(np.round(timesteps), dtype=np.int64).copy()
    T = check_positive_int(num_train_timesteps, "num_train_timesteps")
    if ts.size > T:
        raise PifsError(f"cannot place {ts.size} unique timesteps in 0..{T - 1}")
    n = ts.size
    # top-down cap: t_i <= T - 1 - i and t_i <= t_{i-1} - 1  <=>  t_i + i <= running min
    caps = np.minimum.accumulate(np.minimum(ts + np.arange(n), T - 1)) - np.arange(n)
    # bottom-up floor: t_i >= n - 1 - i and t_i >= t_{i+1} + 1
    return (np.maximum.accumulate(np.maximum(caps[::-1] - np.arange(n), 0)) + np.arange(n))[::-1].copy()


def timesteps_from_sigmas(schedule: DiscreteSchedule, sigmas) -> np.ndarray:
    """Integer training timesteps of VE levels: round(diffusers' log-sigma interpolation), then repaired."""
    sig = as_float_array(sigmas, "sigmas", ndim=1)
    return repair_timesteps(np.round(schedule.timestep_of_sigma(sig)), schedule.num_train_timesteps)


def _refine_timesteps(schedule: DiscreteSchedule, ts: np.ndarray, lam: np.ndarray, count: np.ndarray,
                      max_sweeps: int = 50, start: str = "marginal") -> np.ndarray:
    """Integer coordinate descent on W2^2 of the timestep chain (moves of +-1, order kept)."""
    table = schedule.sigmas_table
    T = schedule.num_train_timesteps

    def cost(t):
        return _w2sq(np.concatenate([table[t], [0.0]]), lam, count, start)

    ts = ts.copy()
    best = cost(ts)
    for _ in range(max_sweeps):
        improved = False
        for i in range(1, ts.size):  # the first level stays at the schedule's top
            for move in (-1, 1):
                cand = ts[i] + move
                hi = ts[i - 1] - 1
                lo = ts[i + 1] + 1 if i + 1 < ts.size else 0
                if not (lo <= cand <= hi and 0 <= cand <= T - 1):
                    continue
                trial = ts.copy()
                trial[i] = cand
                c = cost(trial)
                if c < best - 1e-12 * max(best, 1.0):
                    ts, best, improved = trial, c, True
                    break
        if not improved:
            break
    return ts


def optimal_steps(schedule: Schedule, spectrum: Spectrum, steps: int, *, fixed_endpoints: bool = False,
                  sigma_min: float | None = None, sigma_max: float | None = None,
                  max_bins: int = DEFAULT_MAX_BINS, refine_timesteps: bool = True,
                  maxiter: int = 5000, start: str = "marginal") -> StepDesign:
    """Minimise the closed-form W2 over the noise levels between the schedule's endpoints.

    ``steps`` = N: N noisy levels (``fixed_endpoints=False``) or N + 1 with
    sigma_min fixed (``True``); both end with a step to 0 (clean).
    Endpoints default to :func:`pifskit.chains.sigma_range`. ``start``: "marginal" (the theory's
    surrogate) or "prior" (the sampler starts from N(0, I); see :func:`w2_of_sigmas`).
    For a discrete schedule, integer ``timesteps`` come from rounding the
    optimal sigmas (diffusers' log-sigma interpolation), repairing duplicates,
    and (``refine_timesteps``) an integer coordinate descent on W2.
    """
    if not isinstance(schedule, Schedule):
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    N = check_positive_int(steps, "steps")
    check_choice(start, "start", START_MODES)
    smin, smax = sigma_range(schedule)
    smin = float(smin if sigma_min is None else sigma_min)
    smax = float(smax if sigma_max is None else sigma_max)
    if not (np.isfinite(smin) and np.isfinite(smax) and 0 < smin < smax):
        raise PifsError(f"empty optimisation: need 0 < sigma_min < sigma_max (finite), got "
                        f"sigma_min={smin:g}, sigma_max={smax:g}")
    discrete = isinstance(schedule, DiscreteSchedule)
    n_levels = N + 1 if fixed_endpoints else N
    if discrete and n_levels > schedule.num_train_timesteps:
        raise PifsError(f"steps must be <= {schedule.num_train_timesteps - (1 if fixed_endpoints else 0)} "
                        f"(T = {schedule.num_train_timesteps} training timesteps), got {N}")
    lam, count, total = compress_spectrum(spectrum, max_bins)
    w = total  # r_0^2 = lambda at the clean end, summed over the group
    free, nit, ok = _optimise(smax, smin, N, fixed_endpoints, lam, w, maxiter, start)
    noisy = np.concatenate([[smax], free, [smin] if fixed_endpoints else []])
    # the softmax keeps levels ordered in exact arithmetic; guard float ties for huge N
    if not (np.diff(noisy) < 0).all():
        noisy = _untie(noisy, smin, smax)
    sig = np.concatenate([noisy, [0.0]])
    w2 = float(np.sqrt(_w2sq(sig, lam, count, start)))
    chain = Chain.from_sigmas(sig, None, name=f"w2opt-{N}")
    ts = ts_chain = w2_ts = None
    if discrete:
        ts = timesteps_from_sigmas(schedule, noisy)
        if refine_timesteps and ts.size <= 64:
            ts = _refine_timesteps(schedule, ts, lam, count, start=start)
        ts_chain = Chain.from_timesteps(schedule, ts, set_alpha_to_one=True, name=f"w2opt-{N}-timesteps")
        w2_ts = float(np.sqrt(_w2sq(ts_chain.sigmas, lam, count, start)))
        chain = Chain(chain.logsnr, timesteps=schedule.timestep_of_sigma(noisy), name=chain.name)
    return StepDesign(sigmas=sig, timesteps=ts, w2=w2, w2_timesteps=w2_ts, chain=chain, timestep_chain=ts_chain,
                      fixed_endpoints=bool(fixed_endpoints), sigma_min=smin, sigma_max=smax, iterations=nit,
                      converged=ok, meta={"bins": int(lam.size), "spectrum": spectrum.name, "start": start})


def _untie(noisy: np.ndarray, smin: float, smax: float) -> np.ndarray:
    """Spread float ties in log sigma (only reachable for very large N)."""
    u = np.log(noisy)
    n = u.size
    eps = 1e-12 * max(np.log(smax / smin), 1.0)
    u = np.minimum.accumulate(u - eps * np.arange(n)) + eps * np.arange(n)
    u = u - eps * np.arange(n)
    return np.exp(u)


# ---------------------------------------------------------------------------
# distances and baselines
# ---------------------------------------------------------------------------

def rms_log_sigma(a, b) -> float:
    """RMS of log(a_i / b_i) over the positive (noisy) levels both lists share, position by position."""
    x = as_float_array(a, "sigmas a", ndim=1)
    y = as_float_array(b, "sigmas b", ndim=1)
    x, y = x[x > 0], y[y > 0]
    if x.size != y.size or x.size == 0:
        raise PifsError(f"need the same number of noisy levels, got {x.size} and {y.size}")
    return float(np.sqrt(np.mean(np.log(x / y) ** 2)))


def ays_model_for(schedule: Schedule) -> tuple[str, ...]:
    """AYS lists that apply to ``schedule``: SD1.5 / SDXL for the scaled_linear 0.00085..0.012 T=1000 training schedule."""
    if not isinstance(schedule, DiscreteSchedule) or schedule.num_train_timesteps != 1000:
        return ()
    ref = DiscreteSchedule.scaled_linear(1000, 0.00085, 0.012)
    if np.allclose(schedule.alphas_cumprod, ref.alphas_cumprod, rtol=1e-5, atol=1e-7):
        return ("sd15", "sdxl")
    return ()


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

