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
from ..schedules import DiscreteSchedule, RectifiedFlowSchedule, Schedule
from ..spectra import Spectrum
from ._binning import DEFAULT_MAX_BINS, compress_spectrum
from .baselines import ays_model_for, baseline_levels, design_range, starts_from_noise
from .level_spectrum import LevelSpectra
from .solvers import SOLVERS, START_LAWS, solver_kl, solver_sw2sq, solver_w2sq, sw2_standard_error, sw2_weights

__all__ = [
    "METRICS",
    "SOLVERS",
    "SW2_PROJECTIONS",
    "START_MODES",
    "SOLVER_MAX_BINS",
    "score_levels",
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

START_MODES = START_LAWS  # "prior" (VP N(0, I)), "prior-ve" (VE N(0, sigma_0^2)), "marginal" (the theory's)
#: spectrum bins of the solver-aware criterion (binned vs exact W2 agree to ~1e-4; see tests)
SOLVER_MAX_BINS = 128
#: design criteria: "w2" per-direction W2 (sum over eigen-directions), "sw2" sliced W2 (mean over unit projections)
METRICS = ("w2", "sw2")
#: fixed projections (seed 0) of the sliced-W2 criterion
SW2_PROJECTIONS = 1024


def _start_gain(sigma0: float, lam: np.ndarray, start: str) -> np.ndarray:
    """1 / r_start(lambda): the factor the product is compared with.

    "marginal": the chain starts from the exact marginal at sigma_0 (factor 1, the theory's surrogate);
    "prior": it starts from N(0, I) in VP units (what samplers do), so the per-direction start std is 1
    instead of r_0 = sqrt((lambda + sigma_0^2) / (1 + sigma_0^2)).
    """
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


#: objective value of a rejected trial point (a float tie of levels) under SW2^2 / (the best start's SW2^2)
_REJECT_SW2 = 1e6


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
    if isinstance(spectrum, LevelSpectra):
        lam, count = spectrum, spectrum.count
    else:
        lam, count, _ = compress_spectrum(spectrum, max_bins)
    proj = _sw2_proj(spectrum, count, projections) if metric == "sw2" else None
    return float(np.sqrt(_dist2(solver, np.asarray(sigmas, float), lam, count, start, proj=proj)))


#: solvers that reuse past denoiser outputs (the min-gap floor applies to them only)
MULTISTEP = ("dpmpp2m", "dpmpp3m", "ipndm")
#: smallest log-sigma gap of a free level, as a fraction of log(sigma_max/sigma_min) / N (see optimal_steps)
MIN_GAP = 0.5


def _delta(n_gaps: int, min_gap: float, first: bool = False) -> np.ndarray:
    """Floors of the gap fractions: min_gap / n_gaps for the gaps *between* levels, 0 for the slack below
    the last and (``first=False``) for the gap above the first free level when that is not a level (a free
    sigma_0, or sigma_0 = inf); capped so the floors sum to <= 1/2."""
    dl = np.zeros(n_gaps)
    lo = 0 if first else 1
    if min_gap > 0 and n_gaps - 1 > lo:
        dl[lo:-1] = min(min_gap / n_gaps, 0.5 / n_gaps)
    return dl


def _levels_of(z: np.ndarray, u_max: float, D: float, pure: bool,
               min_gap: float = 0.0, first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Noisy VE levels from logits z (L + 1 entries: L free gaps and a slack):
    u_j = u_max - D cumsum(q)_j, q = delta + (1 - (L + 1) delta) softmax(z) (every gap >= delta D)."""
    p = softmax(z)
    dl = _delta(z.size, min_gap, first)
    q = dl + (1.0 - dl.sum()) * p
    u = u_max - D * np.cumsum(q[:-1])
    lev = np.exp(u)
    return (np.concatenate([[np.inf], lev]) if pure else lev), p


def _z_of(levels: np.ndarray, u_max: float, D: float, pure: bool, min_gap: float = 0.0,
          first: bool = False) -> np.ndarray:
    free = levels[1:] if pure else levels
    u = np.log(free)
    gaps = -np.diff(np.concatenate([[u_max], u]))
    allg = np.concatenate([gaps, [D - gaps.sum()]]) / D
    dl = _delta(allg.size, min_gap)
    # start strictly inside: a gap at 0 (e.g. a baseline starting at sigma_max) would saturate the softmax
    allg = np.maximum((allg - dl) / (1.0 - dl.sum()), 1e-3 / allg.size)
    return np.log(allg / allg.sum())


def _solver_objective(z, u_max, D, pure, solver, lam, count, start, norm, min_gap=0.0, proj=None):
    """The design's metric (:func:`_dist2`; ``proj`` None = W2^2, else sliced SW2^2) / norm, and its gradient in z."""
    lev, p = _levels_of(z, u_max, D, pure, min_gap)
    if not (np.diff(lev) < 0).all():  # a float tie (a gap underflowed): reject the trial point
        # W2^2 / trace <= (1 + start factor)^2-ish; any value above the start's (SW2^2 is scaled by its best start)
        return (4.0 if proj is None else _REJECT_SW2), np.zeros(z.size)
    val, g = _dist2(solver, np.concatenate([lev, [0.0]]), lam, count, start, grad=True, proj=proj)
    g_u = g[1:] if pure else g
    dE_dp = np.zeros(z.size)
    dE_dp[:-1] = -D * np.cumsum(g_u[::-1])[::-1]
    dE_dp *= 1.0 - _delta(z.size, min_gap).sum()
    grad = p * (dE_dp - np.dot(p, dE_dp))
    return val / norm, grad / norm


def _reference_variances(lam) -> np.ndarray:
    """Per-direction variances for normalising and the closed-form start: lambda, or a level model's t_k^2."""
    return lam.target_variance() if isinstance(lam, LevelSpectra) else lam


def _feasible(levels: np.ndarray, smin: float, smax: float, pure: bool) -> np.ndarray | None:
    """A candidate's noisy levels moved inside the design range (None if it cannot be represented)."""
    if pure != bool(np.isinf(levels[0])):
        return None
    free = levels[1:] if pure else levels
    if free.size == 0:
        return None
    free = np.clip(free, smin, smax)
    if not (np.diff(free) < 0).all():
        free = _untie(free, smin, smax)
    return np.concatenate([[np.inf], free]) if pure else free


def _optimise_solver(smin: float, smax: float, N: int, pure: bool, solver: str, lam: np.ndarray,
                     count: np.ndarray, start: str, candidates: list, maxiter: int,
                     min_gap: float = 0.0, proj: np.ndarray | None = None,
                     scale: float | None = None) -> tuple[np.ndarray, int, bool]:
    """Noisy levels minimising the solver's W2 over the design range (sigma_0 free, or inf when pure).

    Starts: every candidate (closed-form guess, uniform log sigma, the baselines), scored; L-BFGS-B runs
    from the best two. BLAS single-threaded (small matrices; see :func:`_optimise`).
    """
    u_max, D = float(np.log(smax)), float(np.log(smax / smin))
    norm = _metric_norm(lam, count, proj, scale)
    n_runs = 2 if N <= 20 else 1
    if pure and N == 1:
        return np.array([np.inf]), 0, True
    with threadpool_limits(limits=1, user_api="blas"):
        scored = []
        for cand in candidates:
            lev = _feasible(np.asarray(cand, float), smin, smax, pure)
            if lev is None or lev.size != N:
                continue
            z = _z_of(lev, u_max, D, pure, min_gap)
            scored.append((_solver_objective(z, u_max, D, pure, solver, lam, count, start, norm, min_gap, proj)[0], z))
        scored.sort(key=lambda t: t[0])
        best = None
        for _, z0 in scored[:n_runs]:
            res = minimize(_solver_objective, z0, args=(u_max, D, pure, solver, lam, count, start, norm, min_gap, proj),
                           jac=True,
                           method="L-BFGS-B", options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 20})
            if best is None or res.fun < best.fun:
                best = res
    lev, _ = _levels_of(best.x, u_max, D, pure, min_gap)
    return lev, int(best.nit), bool(best.success)


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


def _descend_timesteps(ts: np.ndarray, cost, T: int, first: int, allowed, max_sweeps: int) -> np.ndarray:
    """Integer coordinate descent on ``cost``: moves of +-1 of ts[first:], order and uniqueness kept,
    a candidate timestep taken only where ``allowed(t)``; stops when a sweep improves nothing."""
    ts = ts.copy()
    best = cost(ts)
    for _ in range(max_sweeps):
        improved = False
        for i in range(first, ts.size):
            for move in (-1, 1):
                cand = ts[i] + move
                hi = ts[i - 1] - 1 if i > 0 else T - 1
                lo = ts[i + 1] + 1 if i + 1 < ts.size else 0
                if not (lo <= cand <= hi and allowed(cand)):
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


def _refine_timesteps(schedule: DiscreteSchedule, ts: np.ndarray, lam: np.ndarray, count: np.ndarray,
                      max_sweeps: int = 50, start: str = "marginal") -> np.ndarray:
    """Integer coordinate descent on W2^2 of the timestep chain (moves of +-1, order kept)."""
    table = schedule.sigmas_table
    return _descend_timesteps(ts, lambda t: _w2sq(np.concatenate([table[t], [0.0]]), lam, count, start),
                              schedule.num_train_timesteps, 1,  # the first level stays at the schedule's top
                              lambda t: True, max_sweeps)


def optimal_steps(schedule: Schedule, spectrum: Spectrum, steps: int, *, solver: str = "ddim",
                  start: str | None = None, fixed_endpoints: bool = False,
                  sigma_min: float | None = None, sigma_max: float | None = None,
                  max_bins: int | None = None, refine_timesteps: bool = True,
                  maxiter: int = 5000, baselines: bool = True, min_gap: float = MIN_GAP,
                  extra_baselines: dict | None = None, free_start: bool = False, metric: str = "w2",
                  projections: int = SW2_PROJECTIONS) -> StepDesign:
    """The N sampling levels minimising the closed-form W2 of ``solver`` on the Gaussian of ``spectrum``.

    ``metric``: "w2" (default) -- the per-direction W2^2 = sum_k (sqrt(lambda_k) - |m_k|)^2 of the
    solver's output law N(0, diag m^2); "sw2" -- its *sliced* W2 (what ``pifskit bench sampling`` measures),

        SW2^2 = E_u (sqrt(sum_k u_k^2 m_k^2) - sqrt(sum_k u_k^2 lambda_k))^2,  u uniform on the unit sphere,

    estimated on ``projections`` fixed directions (seed 0; a spectrum bin of c_k directions enters through
    its weight chi2(c_k) / chi2(d), :func:`~pifskit.design.solvers.sw2_weights`; the Monte-Carlo error is
    reported as ``sw2_se``, ~0.5-1 % of SW2^2 at 1024). In high dimension the weights concentrate on
    c_k / d, so SW2 tends to |sqrt(mean m^2) - sqrt(mean lambda)|: it matches the *trace* of the output
    covariance, not each direction -- a different criterion, not a better one (it lets a step schedule
    trade a too-small variance in one direction against a too-large one in another). The baselines and the
    integer-timestep refinement are scored with the same metric.

    ``spectrum`` may also be a :class:`~pifskit.design.level_spectrum.LevelSpectra` (a model's per-level
    linear model, e.g. from :mod:`pifskit.torch.model_spectrum`): the solver then sees the gains
    g_k(sigma_i) and is scored against the exact flow of that model (no binning; the DDIM/marginal angle
    form and ``fixed_endpoints`` do not apply).

    ``steps`` = N noisy levels, then the solver's own last step to sigma = 0 (the landing convention of
    every baseline too). ``start`` (default: "prior-ve" for an EDM schedule, else "prior"):

    * "prior" / "prior-ve" (charged start, default): the sampler starts from N(0, I) in VP units
      (N(0, sigma_0^2) in VE units for "prior-ve") at its first level, sigma_0 = sigma_max (or inf for a
      schedule that reaches pure noise: flow models); ``free_start=True`` frees sigma_0 in
      [sigma_min, sigma_max] -- the Gaussian criterion then often starts low (a Gaussian prior at
      sigma ~ 2-4 costs it little), which on a mixture skips the window where modes are decided (measured
      on gmm:digits with DPM-Solver++(2M): worse), so it is off by default. The optimiser starts from the
      closed-form guess, uniform log sigma and every baseline, and the reported optimum's ``w2``
      (``sw2`` with metric="sw2") is <= each baseline's under this same metric: if a baseline scores lower (e.g. one that starts below
      sigma_max at N = 1-2), its levels are returned and ``meta["source"]`` names it;
    * "marginal": the theory's surrogate (the exact marginal at sigma_0 = sigma_max, fixed); with
      ``solver="ddim"`` this is the original criterion III (``fixed_endpoints`` allowed). It does not
      charge a chain that starts below sigma_max, so baselines such as 'leading' can score lower.

    ``min_gap``: every level lies at least about min_gap * log(sigma_max/sigma_min) / N below the one
    above it in log sigma (the first free level below an inf or free sigma_0 excepted). With an exact *linear* denoiser, multistep solvers (DPM-Solver++, iPNDM) profit
    from near-duplicate levels (the difference of two almost equal denoiser outputs is an exact
    derivative, weighted by h / h_prev); a learned denoiser's error would be amplified by the same weight,
    so the criterion does not offer that trick to them (0 turns the guard off; one-step solvers --
    ddim, euler, heun -- have no floor).

    Endpoints: an EDM schedule's own (sigma_min, sigma_max), else :func:`pifskit.chains.sigma_range`.
    For a discrete schedule, integer ``timesteps`` come from rounding the optimal sigmas (diffusers'
    log-sigma interpolation), repairing duplicates and (``refine_timesteps``, N <= 64) an integer
    coordinate descent on the same metric.
    """
    if not isinstance(schedule, Schedule):
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    N = check_positive_int(steps, "steps")
    check_choice(solver, "solver", SOLVERS)
    if start is None:
        from ..schedules import EDMSchedule

        start = "prior-ve" if isinstance(schedule, EDMSchedule) else "prior"
    check_choice(start, "start", START_MODES)
    check_choice(metric, "metric", METRICS)
    level_model = isinstance(spectrum, LevelSpectra)
    if start == "marginal" and solver == "ddim" and not level_model and metric == "w2":
        d = _optimal_steps_ddim_marginal(schedule, spectrum, N, fixed_endpoints=fixed_endpoints, sigma_min=sigma_min,
                                         sigma_max=sigma_max, max_bins=max_bins or DEFAULT_MAX_BINS,
                                         refine_timesteps=refine_timesteps, maxiter=maxiter, start="marginal")
        base = {}
        if baselines and not fixed_endpoints:
            for name, levels in {**baseline_levels(schedule, N), **(extra_baselines or {})}.items():
                if np.isfinite(levels).all():
                    base[name] = {"sigmas": levels, "w2": w2_of_sigmas(levels, spectrum, max_bins or DEFAULT_MAX_BINS)}
        lam, count, _ = compress_spectrum(spectrum, max_bins or DEFAULT_MAX_BINS)
        return _with(d, solver="ddim", start="marginal", baselines=base, schedule=schedule,
                     kl=solver_kl("ddim", d.sigmas, lam, count, "marginal"), metric="w2",
                     sliced=(lam, count, _sw2_proj(spectrum, count, projections)))
    if fixed_endpoints:
        raise PifsError("fixed_endpoints is the theory's convention: only with solver='ddim', start='marginal' "
                        "and metric='w2'")
    bins = max_bins or SOLVER_MAX_BINS
    if solver not in MULTISTEP:  # one-step solvers cannot exploit near-duplicate levels: no floor
        min_gap = 0.0
    if level_model:  # per-level linear model: its own K direction groups (no binning)
        lam, count = spectrum, spectrum.count
    else:
        lam, count, _ = compress_spectrum(spectrum, bins)
    W = _sw2_proj(spectrum, count, projections)
    proj = W if metric == "sw2" else None
    smin0, smax0 = design_range(schedule)
    smin = float(smin0 if sigma_min is None else sigma_min)
    smax = float(smax0 if sigma_max is None else sigma_max)
    if not (np.isfinite(smin) and np.isfinite(smax) and 0 < smin < smax):
        raise PifsError(f"empty optimisation: need 0 < sigma_min < sigma_max (finite), got "
                        f"sigma_min={smin:g}, sigma_max={smax:g}")
    discrete = isinstance(schedule, DiscreteSchedule)
    if discrete and N > schedule.num_train_timesteps:
        raise PifsError(f"steps must be <= {schedule.num_train_timesteps} "
                        f"(T = {schedule.num_train_timesteps} training timesteps), got {N}")
    pure = starts_from_noise(schedule)
    marginal = start == "marginal"

    def score(levels: np.ndarray) -> float:  # the per-direction W2 (always reported)
        return float(np.sqrt(solver_w2sq(solver, levels, lam, count, start)))

    def sscore(levels: np.ndarray) -> float:  # the sliced W2 (always reported)
        return float(np.sqrt(solver_sw2sq(solver, levels, lam, W, start)))

    key = metric  # the criterion the design minimises and the baselines are ranked by
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
    if (marginal or not free_start) and not pure:
        # sigma_0 = sigma_max fixed (as samplers run the full range): optimise the N - 1 levels below it
        noisy, nit, ok = _optimise_solver_fixed_top(smin, smax, N, solver, lam, count, cands, maxiter, start, min_gap,
                                                    proj, scale)
    else:
        noisy, nit, ok = _optimise_solver(smin, smax, N, pure, solver, lam, count, start, cands, maxiter, min_gap,
                                          proj, scale)
    sig = np.concatenate([noisy, [0.0]])
    val = {"w2": score(sig), "sw2": sscore(sig)}
    source = "optimiser"
    rivals = dict(base) if not marginal else {}
    if w2_design is not None:  # a local optimum of SW2 worse than the W2 design: keep the W2 design
        rivals["w2-design"] = {"sigmas": w2_design, "w2": score(w2_design), "sw2": sscore(w2_design)}
    for name, b in rivals.items():  # a baseline the optimiser could not improve on (float ties)
        if b[key] < val[key]:
            sig, val, source = np.asarray(b["sigmas"], float), {"w2": b["w2"], "sw2": b["sw2"]}, name
    w2 = val["w2"]
    with np.errstate(divide="ignore"):
        chain = Chain(-2.0 * np.log(sig), name=f"w2opt-{solver}-{N}")
    ts = ts_chain = w2_ts = None
    finite = sig[:-1][np.isfinite(sig[:-1])]
    if discrete:
        ts = timesteps_from_sigmas(schedule, finite)
        if refine_timesteps and ts.size <= 20:
            ts = _refine_timesteps_solver(schedule, ts, solver, lam, count, start, fixed_top=marginal, proj=proj)
        ts_chain = Chain.from_timesteps(schedule, ts, set_alpha_to_one=True, name=f"w2opt-{solver}-{N}-timesteps")
        w2_ts = score(ts_chain.sigmas)
        chain = Chain(chain.logsnr, timesteps=schedule.timestep_of_sigma(finite), name=chain.name)
    d = StepDesign(sigmas=sig, timesteps=ts, w2=w2, w2_timesteps=w2_ts, chain=chain, timestep_chain=ts_chain,
                   fixed_endpoints=False, sigma_min=smin, sigma_max=smax, iterations=nit, converged=ok,
                   meta={"bins": int(lam.size), "spectrum": spectrum.name, "start": start, "source": source})
    return _with(d, solver=solver, start=start, baselines=base, schedule=schedule,
                 kl=solver_kl(solver, sig, lam, count, start), metric=metric, sliced=(lam, count, W))


def _with(d: StepDesign, *, solver: str, start: str, baselines: dict, schedule: Schedule, kl: float,
          metric: str = "w2", sliced: tuple | None = None) -> StepDesign:
    """Attach solver, start, baselines, KL, the metric, the sliced W2 (``sliced`` = (lam, count, weights): of
    the design, its timestep chain and any baseline without one) and (rectified flow) the flow-unit levels."""
    from dataclasses import replace

    sw2 = se = sw2_ts = None
    if sliced is not None:
        lam, _, W = sliced
        sw2sq = solver_sw2sq(solver, d.sigmas, lam, W, start)
        sw2 = float(np.sqrt(sw2sq))
        se = sw2_standard_error(solver, d.sigmas, lam, W, start) / (2.0 * sw2) if sw2 > 0 else None
        if d.timestep_chain is not None:
            sw2_ts = float(np.sqrt(solver_sw2sq(solver, d.timestep_chain.sigmas, lam, W, start)))
        for b in baselines.values():
            if "sw2" not in b:
                b["sw2"] = float(np.sqrt(solver_sw2sq(solver, np.asarray(b["sigmas"], float), lam, W, start)))

    flow = unshifted = shift = None
    if isinstance(schedule, RectifiedFlowSchedule):
        noisy = d.sigmas[:-1]
        with np.errstate(invalid="ignore"):
            flow = np.where(np.isinf(noisy), 1.0, noisy / (1.0 + noisy))
        shift = schedule.shift
        unshifted = flow / (shift - (shift - 1.0) * flow)  # inverse of t' = s t / (1 + (s - 1) t)
    return replace(d, solver=solver, start=start, baselines=baselines, kl=kl, flow_sigmas=flow,
                   flow_sigmas_unshifted=unshifted, flow_shift=shift, metric=metric, sw2=sw2, sw2_se=se,
                   sw2_timesteps=sw2_ts)


def _optimise_solver_fixed_top(smin, smax, N, solver, lam, count, cands, maxiter, start="marginal", min_gap=0.0,
                               proj=None, scale=None):
    """sigma_0 = sigma_max fixed: the N - 1 free levels below it (``proj``: the metric, see :func:`_dist2`)."""
    if N == 1:
        return np.array([smax]), 0, True
    u_max, D = float(np.log(smax)), float(np.log(smax / smin))
    norm = _metric_norm(lam, count, proj, scale)

    def obj(z):
        lev, p = _levels_of(z, u_max, D, False, min_gap, True)
        if not (np.diff(lev) < 0).all() or lev[0] >= smax:
            return (4.0 if proj is None else _REJECT_SW2), np.zeros(z.size)
        val, g = _dist2(solver, np.concatenate([[smax], lev, [0.0]]), lam, count, start, grad=True, proj=proj)
        dE_dp = np.zeros(z.size)
        dE_dp[:-1] = -D * np.cumsum(g[1:][::-1])[::-1]
        dE_dp *= 1.0 - _delta(z.size, min_gap, True).sum()
        return val / norm, p * (dE_dp - np.dot(p, dE_dp)) / norm

    best = None
    with threadpool_limits(limits=1, user_api="blas"):
        zs = []
        for cand in cands:
            cand = np.asarray(cand, float)
            if cand.size != N or not np.isfinite(cand).all():
                continue
            free = _feasible(cand[1:], smin, smax * (1 - 1e-12), False)
            if free is None:
                continue
            z = _z_of(free, u_max, D, False, min_gap, True)
            zs.append((obj(z)[0], z))
        zs.sort(key=lambda t: t[0])
        for _, z0 in zs[:2 if N <= 20 else 1]:
            res = minimize(obj, z0, jac=True, method="L-BFGS-B",
                           options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 20})
            if best is None or res.fun < best.fun:
                best = res
    lev, _ = _levels_of(best.x, u_max, D, False, min_gap, True)
    return np.concatenate([[smax], lev]), int(best.nit), bool(best.success)


def _refine_timesteps_solver(schedule: DiscreteSchedule, ts: np.ndarray, solver: str, lam, count, start: str,
                             fixed_top: bool, max_sweeps: int = 20, proj=None) -> np.ndarray:
    """Integer coordinate descent (moves of +-1, order kept) on the solver's W2^2 (or SW2^2) of the timestep chain."""
    table = schedule.sigmas_table
    def cost(t):
        return _dist2(solver, np.concatenate([table[t], [0.0]]), lam, count, start, proj=proj)

    return _descend_timesteps(ts, cost, schedule.num_train_timesteps, 1 if fixed_top else 0,
                              lambda t: bool(np.isfinite(table[t])), max_sweeps)


def _optimal_steps_ddim_marginal(schedule: Schedule, spectrum: Spectrum, steps: int, *, fixed_endpoints: bool = False,
                  sigma_min: float | None = None, sigma_max: float | None = None,
                  max_bins: int = DEFAULT_MAX_BINS, refine_timesteps: bool = True,
                  maxiter: int = 5000, start: str = "marginal") -> StepDesign:
    """The theory's variant (DDIM, the marginal start, sigma_0 = sigma_max fixed; fixed endpoints allowed)."""
    return _optimal_steps_ddim_marginal_impl(schedule, spectrum, steps, fixed_endpoints=fixed_endpoints,
                                            sigma_min=sigma_min, sigma_max=sigma_max, max_bins=max_bins,
                                            refine_timesteps=refine_timesteps, maxiter=maxiter, start=start)


def _optimal_steps_ddim_marginal_impl(schedule: Schedule, spectrum: Spectrum, steps: int, *,
                                      fixed_endpoints: bool, sigma_min, sigma_max, max_bins: int,
                                      refine_timesteps: bool, maxiter: int, start: str) -> StepDesign:
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
    """Spread float ties in log sigma (only reachable for very large N): strictly decreasing, inside [smin, smax].

    Each level is capped one relative step eps below its predecessor (top down) and floored one step above
    its successor (bottom up, from sigma_min), so ties are broken and no level leaves the range.
    """
    u = np.log(np.clip(noisy, smin, smax))
    n = u.size
    lo, hi = np.log(smin), np.log(smax)
    eps = min(1e-9 * max(hi - lo, 1.0), (hi - lo) / (4.0 * n))
    k = np.arange(n)
    u = np.minimum.accumulate(np.minimum(u, hi) + eps * k) - eps * k          # top down: u_i <= u_{i-1} - eps
    r = np.maximum(u[::-1], lo)                                                # bottom up: u_i >= u_{i+1} + eps
    u = (np.maximum.accumulate(r - eps * k) + eps * k)[::-1]
    out = np.exp(u)
    out[0], out[-1] = min(out[0], smax), max(out[-1], smin)  # exp(log x) may round past an endpoint
    return out


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

