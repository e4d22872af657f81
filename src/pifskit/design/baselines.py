"""Comparison schedules for criterion III, every one as N noisy VE levels then 0 (one landing convention).

Finite top (range :func:`design_range`): diffusers' trailing / leading / linspace (discrete), uniform-t
(continuous), uniform-logsnr, karras-rho7, kl-optimal (uniform in atan sigma), beta-0.6 (diffusers' beta
sigmas), dmn (Xue et al., CVPR 2024, re-implemented from the paper: :func:`_dmn_objective`) and the published
Align Your Steps lists (sigma_min replaced by 0). Pure-noise schedules (flow models) start at sigma = inf
and get diffusers' FlowMatch family in flow units t' = sigma / (1 + sigma): flow-default (or uniform-t),
karras-rho7, exponential, beta-0.6 and kl-optimal. See docs/design.md (Baselines, solver section).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from scipy.stats import beta as beta_dist

from .._validate import PifsError, check_positive_int
from ..chains import AYS_SIGMAS, ays_sigmas, karras_sigmas, make_chain, sigma_range
from ..schedules import DiscreteSchedule, EDMSchedule, RectifiedFlowSchedule, Schedule

#: DMN is computed up to this many steps (its derivative-free optimiser is the slow part of the design above)
DMN_MAX_STEPS = 50


def starts_from_noise(schedule: Schedule) -> bool:
    """True for a continuous schedule whose t = 1 is pure noise (flow models, continuous cosine)."""
    if isinstance(schedule, DiscreteSchedule):
        return False
    return not np.isfinite(float(schedule.sigma(1.0)))


def design_range(schedule: Schedule) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the finite levels: an EDM schedule's own endpoints, else :func:`sigma_range`."""
    if isinstance(schedule, EDMSchedule):
        return schedule.sigma_min, schedule.sigma_max
    return sigma_range(schedule)


def kl_optimal_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """n levels uniform in atan(sigma) from sigma_max (may be inf) to sigma_min."""
    n = check_positive_int(n, "steps")
    if n == 1:
        return np.array([sigma_max])
    frac = np.arange(n) / (n - 1)
    out = np.tan((1 - frac) * np.arctan(sigma_max) + frac * np.arctan(sigma_min))
    if np.isinf(sigma_max):
        out[0] = np.inf
    return out


def beta_sigmas(sigma_min: float, sigma_max: float, n: int, a: float = 0.6, b: float = 0.6) -> np.ndarray:
    """diffusers' beta sigmas: sigma_min + ppf(1 - i/(n-1)) (sigma_max - sigma_min), i = 0..n-1."""
    n = check_positive_int(n, "steps")
    grid = 1.0 - (np.linspace(0, 1, n) if n > 1 else np.zeros(1))
    return sigma_min + beta_dist.ppf(grid, a, b) * (sigma_max - sigma_min)


# ---------------------------------------------------------------------------
# DMN (Xue et al., CVPR 2024)
# ---------------------------------------------------------------------------

def _dmn_objective(lam_pts: np.ndarray) -> float:
    """DMN's error bound for half-logSNR points lam_0 < ... < lam_N (VP alpha/sigma = e^lam).

    Step s integrates e^lam times the Lagrange interpolant of the data predictions at the last k points
    (k = 1 on the first and last step, 2 on the second and second-to-last, else 3) over [lam_s, lam_{s+1}];
    its weight on the prediction at point n is J_{s,n} (H_j(h) = int_0^h tau^j e^tau dtau). With the
    prediction error at n modelled as err_n = sigma_n^2 / alpha_n along one direction, the bound is
    sum_{s<3} sqrt(sum_n (err_n J_{s,n})^2) + sum_n |sum_{s>=3} err_n J_{s,n}| (order-1 steps: |err J|).
    """
    return float(_dmn_objective_batch(np.asarray(lam_pts, float)[None, :])[0])


def _dmn_objective_batch(P: np.ndarray) -> np.ndarray:
    """:func:`_dmn_objective` for each row of P (B, N + 1)."""
    B, N = P.shape[0], P.shape[1] - 1
    h = np.diff(P, axis=1)
    e = np.exp(P[:, :-1])
    err = np.sqrt(1.0 + np.exp(-2 * P)) / (1.0 + np.exp(2 * P))  # VP sigma^2 / alpha
    H0 = np.expm1(h)
    H1 = np.exp(h) * h - H0
    H2 = np.exp(h) * h * h - 2 * H1
    s = np.arange(N)
    order = np.where((s == 0) | (s == N - 1), 1, np.where((s == 1) | (s == N - 2), 2, 3))
    a = np.concatenate([np.ones((B, 2)), h], axis=1)[:, s]       # h_{s-2} (dummy where unused)
    b = np.concatenate([np.ones((B, 1)), h], axis=1)[:, s]       # h_{s-1}
    o1, o2, o3 = order == 1, order == 2, order == 3
    z = np.zeros((B, N))
    with np.errstate(divide="ignore", invalid="ignore"):
        J0 = np.where(o3, e * (H2 + b * H1) / (a * (a + b)), z)
        J1 = np.where(o3, -e * (H2 + (a + b) * H1) / (a * b), np.where(o2, -e * H1 / b, z))
        J2 = np.where(o3, e * (H2 + (a + 2 * b) * H1 + b * (a + b) * H0) / (b * (a + b)),
                      np.where(o2, e * (H1 + b * H0) / b, e * H0))
    J = np.stack([J0, J1, J2], axis=2)                           # weights on points s-2, s-1, s
    pts = s[:, None] + np.arange(-2, 1)[None, :]
    W = J * err[:, np.clip(pts, 0, N)]
    early = (s < 3) & ~o1
    late = ((s >= 3) & ~o1).astype(float)
    res = np.abs(W[:, o1, 2]).sum(axis=1) + np.sqrt((W[:, early] ** 2).sum(axis=2)).sum(axis=1)
    # per-level sums of the late steps' weighted coefficients: a (N x 3) -> (N + 1) scatter as a matrix product
    S = np.zeros((N, 3, N + 1))
    ok = (pts >= 0)
    S[np.nonzero(ok)[0], np.nonzero(ok)[1], pts[ok]] = 1.0
    c = np.einsum("bsk,skn->bn", W * late[None, :, None], S)
    return res + np.abs(c).sum(axis=1)


def dmn_sigmas(sigma_min: float, sigma_max: float, n: int, maxiter: int = 40) -> np.ndarray:
    """DMN's N + 1 levels (cached per range and N; see :func:`_dmn_cached`)."""
    return np.array(_dmn_cached(float(sigma_min), float(sigma_max), check_positive_int(n, "steps"), int(maxiter)))


@lru_cache(maxsize=256)
def _dmn_cached(sigma_min: float, sigma_max: float, n: int, maxiter: int) -> tuple:
    """DMN's N + 1 optimised levels (VE sigma, sigma_max .. sigma_min), from uniform logSNR as the paper's
    recommended start for pixel models; the interior half-logSNR gaps are D softmax(z) (ordered)."""
    lo, hi = -np.log(sigma_max), -np.log(sigma_min)
    if n < 2:
        return tuple(np.array([sigma_max, sigma_min])[: n + 1])
    D = hi - lo

    floor = 1e-3 / n  # gaps >= 1e-3 D / N keep the divided differences finite

    def pts(z):  # rows of z -> rows of points
        z = np.atleast_2d(z)
        q = floor + (1 - n * floor) * softmax(z, axis=1)
        return lo + D * np.concatenate([np.zeros((z.shape[0], 1)), np.cumsum(q, axis=1)], axis=1)

    def fun(z):  # value and a central-difference gradient, all 2n + 1 points in one batched evaluation
        eps = 1e-6
        Z = np.vstack([z, z + eps * np.eye(n), z - eps * np.eye(n)])
        v = _dmn_objective_batch(pts(Z))
        return float(v[0]), (v[1:n + 1] - v[n + 1:]) / (2 * eps)

    res = minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "ftol": 1e-10})
    lam = pts(res.x if np.isfinite(res.fun) else np.zeros(n))[0]
    lam[-1] = hi
    return tuple(np.exp(-lam))


# ---------------------------------------------------------------------------

def _flow_to_ve(tp: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(tp >= 1.0, np.inf, tp / (1.0 - tp))


def ays_model_for(schedule: Schedule) -> tuple[str, ...]:
    """AYS lists that apply to ``schedule``: SD1.5 / SDXL for the scaled_linear 0.00085..0.012 T=1000 training schedule."""
    if not isinstance(schedule, DiscreteSchedule) or schedule.num_train_timesteps != 1000:
        return ()
    ref = DiscreteSchedule.scaled_linear(1000, 0.00085, 0.012)
    if np.allclose(schedule.alphas_cumprod, ref.alphas_cumprod, rtol=1e-5, atol=1e-7):
        return ("sd15", "sdxl")
    return ()


def _ays_models(schedule: Schedule) -> tuple[str, ...]:
    models = list(ays_model_for(schedule))
    if isinstance(schedule, EDMSchedule) and np.isclose(schedule.sigma_min, 0.002) and np.isclose(schedule.sigma_max, 700):
        models.append("svd")
    return tuple(models)


def baseline_levels(schedule: Schedule, steps: int, *, dmn: bool = True) -> dict[str, np.ndarray]:
    """Every comparison schedule at N steps: name -> N noisy VE levels then 0.0 (see the module docstring)."""
    if not isinstance(schedule, Schedule):
        raise PifsError(f"expected a pifskit Schedule, got {type(schedule).__name__}")
    N = check_positive_int(steps, "steps")
    smin, smax = design_range(schedule)
    out: dict[str, np.ndarray] = {}
    zero = np.zeros(1)
    if starts_from_noise(schedule):
        if isinstance(schedule, RectifiedFlowSchedule):
            t_end = float(schedule.shift * 1e-3 / (1 + (schedule.shift - 1) * 1e-3))  # diffusers shifts sigma_min twice
            t = np.linspace(1.0, t_end, N)
            name = "flow-default"
        else:
            t = np.linspace(1.0, 1e-3, N)
            name = "uniform-t"
        with np.errstate(divide="ignore", over="ignore"):
            first = np.exp(-0.5 * schedule.logsnr(t))
        first[0] = np.inf
        out[name] = np.concatenate([first, zero])
        with np.errstate(invalid="ignore"):
            tp = first / (1.0 + first)
        tp[0] = 1.0
        tp_min = float(tp[-1]) if N > 1 else float(smin / (1 + smin))
        if N > 1:
            out["karras-rho7"] = np.concatenate([_flow_to_ve(karras_sigmas(tp_min, 1.0, N)), zero])
            out["exponential"] = np.concatenate([_flow_to_ve(np.exp(np.linspace(0.0, np.log(tp_min), N))), zero])
            out["beta-0.6"] = np.concatenate([_flow_to_ve(beta_sigmas(tp_min, 1.0, N)), zero])
        out["kl-optimal"] = np.concatenate([kl_optimal_sigmas(smin, np.inf, N), zero])
        return out
    if isinstance(schedule, DiscreteSchedule):
        check_positive_int(N, "steps", maximum=schedule.num_train_timesteps)
        for spacing in ("trailing", "leading", "linspace"):
            out[spacing] = make_chain(schedule, N, spacing).sigmas
    elif not isinstance(schedule, EDMSchedule):
        out["uniform-t"] = make_chain(schedule, N, "uniform").sigmas
    logs = np.exp(np.linspace(np.log(smax), np.log(smin), N)) if N > 1 else np.array([smax])
    out["uniform-logsnr"] = np.concatenate([logs, zero])
    out["karras-rho7"] = np.concatenate([karras_sigmas(smin, smax, N) if N > 1 else np.array([smax]), zero])
    out["kl-optimal"] = np.concatenate([kl_optimal_sigmas(smin, smax, N), zero])
    out["beta-0.6"] = np.concatenate([beta_sigmas(smin, smax, N), zero])
    if dmn and N <= DMN_MAX_STEPS:
        out["dmn"] = np.concatenate([dmn_sigmas(smin, smax, N)[:N], zero])
    for model in _ays_models(schedule):
        base = ays_sigmas(model, N)
        if model in AYS_SIGMAS:
            out[f"ays-{model}"] = np.concatenate([base[:N], zero])
    # drop any list that is not strictly decreasing (duplicates at tiny ranges) -- it is not a valid chain
    return {k: v for k, v in out.items() if (np.diff(v) < 0).all()}
