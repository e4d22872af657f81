"""Model-aware sampling steps: the solver's own error along the model's ODE trajectories.

A teacher solves the probability-flow ODE of the model from B starts x_T on a fine grid
g_0 = sigma_max > g_1 > ... > g_{G-1} = sigma_min, g_G = 0 (DPM-Solver++(3M); grid uniform in log sigma),
and keeps the states X_g and the denoiser outputs D_g = D(X_g; g). One step of a linear solver from
grid level i to j is then an affine combination of cached vectors (VP units, sigma = s/a, rho = sigma_j/sigma_i):

    DDIM = Euler:  x_j = (s_j/s_i) X_i + a_j (1 - rho) D_i
    DPM++(2M):     x_j = (s_j/s_i) X_i + a_j (1 - rho) [(1 + 1/2r) D_i - (1/2r) D_k],  r = h_ki / h_ij,
                   h_ij = log(sigma_i / sigma_j), k the previous level (first-order on the first step)
    Heun:          Euler predictor, trapezoid corrector with D(predictor) replaced by the teacher's D_j

and the last step to 0 is x_0 = D_i for every solver. The local error e = ||x_j - X_j|| (RMS per
coordinate, mean over the B starts) of every step comes from per-start Gram matrices of [X; D]
without a further model call, and dynamic programming picks the N noisy levels (g_0 first, then 0)
whose summed local error is least -- the construction of GITS (Chen et al. 2024, *On the Trajectory
Regularity of ODE-based Diffusion Sampling*) for first-order steps, here with the given solver's own
step (states (k, i) for the two-step DPM++(2M)). An optional refinement (``refine`` evaluations of the
real solver with the model) then minimises the global error by coordinate search in log sigma from the best
of the DP levels, GITS's (the DP with the first-order step, whatever the solver) and the given baselines
(:func:`pifskit.exact_bench.optimise_oracle`). The refined levels are kept only if they also beat their
start on V held-out starts the teacher ran alongside (the search selects the best of many noisy evaluations
on the same B starts and can overfit them).

The global error (``metric``) is by default the theory's W2 between laws, not between samples:
``"w2"`` = :func:`pifskit.metrics.principal_axes_w2` (x_0(levels) against X_G over the B starts, per
coordinate): the Gaussian W2 of the output law to the teacher's, in the teacher's principal axes, the
model-free design's metric with the teacher in place of the data. ``"rms"`` = mean_b RMS(x_0 - X_G), the
per-sample ODE fidelity (GITS's aim), which also charges errors that leave the law unchanged (its root mean
square bounds the W2). On the trained MNIST U-Net (DDIM, 10 steps) the two disagree: the levels that are
closer to the teacher sample by sample shrink the output law more (docs/design.md).

Model calls: G batched teacher calls (B + V rows each), plus N (Heun: 2N - 1) per distinct level list evaluated
(B rows; a search move of level k reuses the best list's first k calls, same levels and bit-identical inputs),
plus 2N (Heun: 2(2N - 1)) of V rows for the held-out check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._validate import PifsError, check_choice, check_positive_int
from ..chains import Chain
from ..metrics import ci_from_replicates, principal_axes_w2
from ..samplers import get_sampler, sample_dpmpp_3m
from ..schedules import a_from_logsnr, logsnr_from_sigma, s_from_logsnr

#: solvers with an exact cached-vector step (Heun: teacher-forced corrector, an approximation)
TRAJECTORY_SOLVERS = ("ddim", "euler", "heun", "dpmpp2m")
#: the global error of a level list: the law-level W2 (default) or the per-sample RMS
TRAJECTORY_METRICS = ("w2", "rms")
#: the search's default budget: REFINE_EVALUATIONS evaluations up to REFINE_CALLS / that many NFE, then about
#: REFINE_CALLS model calls (:func:`default_refine`)
REFINE_EVALUATIONS, REFINE_CALLS = 40, 400


def default_refine(solver: str, steps: int) -> int:
    """The search's default number of evaluations: min(40, ceil(400 / NFE)), NFE = N (Heun: 2N - 1).

    40 up to 10 NFE; beyond, the search spends about the same model calls whatever N. Its gains shrink as the
    steps get small while each evaluation costs more: on the trained MNIST U-Net (docs/benchmarks.md) 10
    evaluations gave DDIM at 40 steps the error of 40 evaluations (0.0172), the held-out check rejected the
    refinement at 20 NFE for DDIM and Heun with either budget, and for DPM++(2M) at 20 steps 40 evaluations
    beat 20 on the design's starts (0.0038 vs 0.0046) but not on the held-out ones (0.0042 both). On the exact
    ``gmm:mnist`` mixture the smaller budget does cost: up to 0.0037 sliced W2 (Heun, 10 steps; docs/design.md)."""
    check_choice(solver, "trajectory solver", TRAJECTORY_SOLVERS)
    nfe = 2 * check_positive_int(steps, "steps") - 1 if solver == "heun" else steps
    return int(min(REFINE_EVALUATIONS, -(-REFINE_CALLS // nfe)))


def trajectory_metric(x0: np.ndarray, target: np.ndarray, metric: str = "w2") -> float:
    """The global error of outputs ``x0`` (B, d) against the teacher's endpoints (same starts), per coordinate:
    ``w2``: principal_axes_w2(x0, target) / sqrt(d); ``rms``: mean_b sqrt(||x0_b - target_b||^2 / d)."""
    check_choice(metric, "trajectory metric", TRAJECTORY_METRICS)
    if not np.isfinite(x0).all():
        return np.inf
    if metric == "rms":
        return float(np.sqrt(np.mean((x0 - target) ** 2, axis=1)).mean())
    return float(principal_axes_w2(x0, target) / np.sqrt(x0.shape[1]))


def bootstrap_error(x0: np.ndarray, target: np.ndarray, metric: str = "w2", *, rival: np.ndarray | None = None,
                    n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """How sure the global error is: the starts resampled with replacement (the same rows of ``x0``, ``target``
    and ``rival``), ``n_boot`` times (numpy stream ``[seed, 7921]``). Returns ``{"ci": [lo, hi]}`` of
    :func:`trajectory_metric` and, with ``rival`` (another list's outputs on the same starts), the paired
    ``"difference"`` m(x0) - m(rival) and its ``"difference_ci"`` (normal approximation, as
    :func:`pifskit.metrics.ci_from_replicates`)."""
    idx = np.random.default_rng([seed, 7921]).integers(0, x0.shape[0], (check_positive_int(n_boot, "n_boot"),
                                                                            x0.shape[0]))
    own = np.array([trajectory_metric(x0[i], target[i], metric) for i in idx])
    value = trajectory_metric(x0, target, metric)
    out = {"ci": list(ci_from_replicates(value, own, level))}
    if rival is not None:
        diff = own - np.array([trajectory_metric(rival[i], target[i], metric) for i in idx])
        est = value - trajectory_metric(rival, target, metric)
        out["difference"] = float(est)
        out["difference_ci"] = list(ci_from_replicates(est, diff, level)) if np.isfinite(diff).all() else None
    return out


@dataclass
class Teacher:
    """States X (G+1, B, d) and denoiser outputs D (G, B, d) on the grid ``sigmas`` (G levels, then 0)."""

    sigmas: np.ndarray
    X: np.ndarray
    D: np.ndarray
    model_calls: int


@dataclass
class TrajectoryDesign:
    """Levels chosen on the teacher grid (and refined), with the errors that chose them."""

    sigmas: np.ndarray  # N noisy VE levels, then 0
    solver: str
    local_error: float  # summed local error of the DP levels (RMS per coordinate)
    global_error: float  # the metric (principal-axes W2 or paired RMS, per coordinate) of the returned levels
    dp_sigmas: np.ndarray
    dp_global_error: float | None
    model_calls: int
    seconds: float
    info: dict = field(default_factory=dict)


def teacher_grid(sigma_min: float, sigma_max: float, size: int = 100, pure_noise: bool = False) -> np.ndarray:
    """``size`` levels uniform in log sigma from sigma_max to sigma_min, then 0; ``pure_noise``: the first of
    them is sigma = inf (flow models start there), the other size - 1 run from sigma_max (finite) down."""
    size = check_positive_int(size, "teacher grid size")
    if size < 3:
        raise PifsError(f"teacher grid needs >= 3 levels, got {size}")
    if not (0 < sigma_min < sigma_max < np.inf):
        raise PifsError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    if pure_noise:
        return np.concatenate([[np.inf], np.geomspace(sigma_max, sigma_min, size - 1), [0.0]])
    return np.append(np.geomspace(sigma_max, sigma_min, size), 0.0)


def _chain(sigmas: np.ndarray, name: str) -> Chain:
    """A chain through VE levels (inf = pure noise, 0 = clean)."""
    return Chain(logsnr_from_sigma(np.asarray(sigmas, dtype=float)), name=name)


def run_teacher(denoiser: Callable, x_T: np.ndarray, grid: np.ndarray) -> Teacher:
    """DPM-Solver++(3M) on ``grid`` from ``x_T`` (VP N(0, I) at grid[0]), recording every state and D.

    3M, not 2M: on the trained MNIST U-Net (80 levels, 64 starts) its endpoint is 0.0065 RMS from a 320-level
    3M run against 2M's 0.0127, at the same 80 calls (docs/design.md)."""
    chain = _chain(grid, "teacher")
    X = np.empty((grid.size,) + x_T.shape)
    D = np.empty((grid.size - 1,) + x_T.shape)
    X[0] = x_T

    def record(info):
        X[info["i"] + 1] = info["x"]
        D[info["i"]] = info["denoised"]

    sample_dpmpp_3m(denoiser, x_T, chain, callback=record)
    return Teacher(grid, X, D, grid.size - 1)


def _ratio(sig_j: np.ndarray, sig_i: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sig_j / sig_i
    return np.where(np.isinf(sig_i), 0.0, r)


def _gram(t: Teacher) -> np.ndarray:
    """Per-start Gram matrices (B, 2G+1, 2G+1) of the vectors [X_0..X_G, D_0..D_{G-1}] / d."""
    V = np.concatenate([t.X, t.D])  # (2G+1, B, d)
    return np.einsum("mbd,nbd->bmn", V, V, optimize=True) / V.shape[-1]


def _rms(gram: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """mean_b sqrt(||sum_p c_p V[idx_p]||^2 / d) for arrays of coefficient / index pairs (one entry per step)."""
    acc = 0.0
    for p, (cp, ip) in enumerate(terms):
        for q, (cq, iq) in enumerate(terms[p:], start=p):
            acc = acc + (1.0 if p == q else 2.0) * (cp * cq) * gram[:, ip, iq]
    return np.sqrt(np.maximum(acc, 0.0)).mean(axis=0)


def local_errors(t: Teacher, solver: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Local errors on the teacher grid: (C1 (G, G), C2 (G, G, G) or None, final (G,)).

    C1[i, j]: first-order step i -> j (j < G noisy; Heun's step for ``heun``); C2[k, i, j]: a DPM++(2M) step
    i -> j after k (``dpmpp2m`` only); final[i]: the last step i -> 0 (x_0 = D_i). inf where not a step.
    """
    check_choice(solver, "trajectory solver", TRAJECTORY_SOLVERS)
    sig = t.sigmas
    G = sig.size - 1
    gram = _gram(t)
    off = G + 1  # Gram index of D_i: off + i (X_i: i)
    l = logsnr_from_sigma(sig)
    a, s = a_from_logsnr(l), s_from_logsnr(l)
    final = _rms(gram, [(np.ones(G), off + np.arange(G)), (-np.ones(G), np.full(G, G))])

    I, J = np.triu_indices(G, k=1)
    rho = _ratio(sig[J], sig[I])
    cx, cd = s[J] / s[I], a[J] * (1.0 - rho)
    if solver == "heun":
        # y = x/a; y_j = y_i + (sig_j - sig_i)/2 (d1 + d2), d1 = (y_i - D_i)/sig_i, d2 = (y_pred - D_j)/sig_j
        dsg = sig[J] - sig[I]
        with np.errstate(invalid="ignore", divide="ignore"):
            y_pred_y, y_pred_d = 1.0 + dsg / sig[I], -dsg / sig[I]  # y_pred = y_pred_y y_i + y_pred_d D_i
            coef_y = 1.0 + 0.5 * dsg * (1.0 / sig[I] + y_pred_y / sig[J])
            coef_di = 0.5 * dsg * (-1.0 / sig[I] + y_pred_d / sig[J])
            coef_dj = -0.5 * dsg / sig[J]
        heun = np.isfinite(sig[I])
        cx = np.where(heun, a[J] * coef_y / np.where(heun, a[I], 1.0), cx)
        cd = np.where(heun, a[J] * coef_di, cd)
        cj = np.where(heun, a[J] * coef_dj, 0.0)
        terms = [(cx, I), (cd, off + I), (cj, off + J), (-np.ones(I.size), J)]
    else:
        terms = [(cx, I), (cd, off + I), (-np.ones(I.size), J)]
    C1 = np.full((G, G), np.inf)
    C1[I, J] = _rms(gram, terms)
    if solver != "dpmpp2m":
        return C1, None, final

    K, I, J = (m.ravel() for m in np.meshgrid(np.arange(G), np.arange(G), np.arange(G), indexing="ij"))
    keep = (K < I) & (I < J)
    K, I, J = K[keep], I[keep], J[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.log(sig[I] / sig[J])
        h_last = np.log(sig[K] / sig[I])
    r = h_last / h
    second = np.isfinite(h_last)
    w = np.where(second, 1.0 / (2.0 * np.where(second, r, 1.0)), 0.0)
    rho = _ratio(sig[J], sig[I])
    base = a[J] * (1.0 - rho)
    terms = [(s[J] / s[I], I), (base * (1.0 + w), off + I), (-base * w, off + K), (-np.ones(I.size), J)]
    C2 = np.full((G, G, G), np.inf)
    C2[K, I, J] = _rms(gram, terms)
    return C1, C2, final


def dp_levels(C1: np.ndarray, C2: np.ndarray | None, final: np.ndarray, steps: int) -> tuple[np.ndarray, float]:
    """Grid indices i_0 = 0 < i_1 < ... < i_{N-1} (N = ``steps`` noisy levels) minimising the summed local error
    C1 (one-step solvers) or C1 on the first step and C2 after it (two-step), plus final[i_{N-1}]."""
    G = C1.shape[0]
    N = check_positive_int(steps, "steps")
    if N > G:
        raise PifsError(f"{N} steps need a teacher grid of at least {N} levels, got {G}")
    if N == 1:
        return np.array([0]), float(final[0])
    back = []
    if C2 is None:
        V = C1[0].copy()  # V[j]: best cost of a path 0 -> ... -> j
        for _ in range(N - 2):
            tot = V[:, None] + C1
            back.append(np.argmin(tot, axis=0))
            V = tot.min(axis=0)
        tot = V + final
        j = int(np.argmin(tot))
        best, path = float(tot[j]), [j]
        for b in reversed(back):
            path.append(int(b[path[-1]]))
        return np.array([0] + path[::-1]), best
    V = np.full((G, G), np.inf)  # V[k, i]: best cost of a path ending k -> i
    V[0] = C1[0]
    for _ in range(N - 2):
        tot = V[:, :, None] + C2  # (k, i, j)
        back.append(np.argmin(tot, axis=0))  # best k for (i, j)
        V = tot.min(axis=0)  # -> V[i, j]
    tot = V + final[None, :]
    k, i = np.unravel_index(int(np.argmin(tot)), tot.shape)
    best, path = float(tot[k, i]), [int(i), int(k)]
    for b in reversed(back):
        path.append(int(b[path[-1], path[-2]]))
    return np.array(path[::-1]), best


def trajectory_steps(denoiser: Callable, d: int, sigma_range: tuple[float, float], steps: int, *,
                     solver: str = "ddim", baselines: dict[str, np.ndarray] | None = None, n_starts: int = 32,
                     grid_size: int = 80, refine: int | None = None, validation: int = 16, seed: int = 0,
                     metric: str = "w2", pure_noise: bool = False,
                     progress: Callable[[int], None] | None = None) -> TrajectoryDesign:
    """N noisy levels (then 0) for ``solver`` from the model's own trajectories.

    ``denoiser(x (B, d) VP, logsnr) -> x0`` (numpy, as :mod:`pifskit.samplers` take it). Starts x_T ~ N(0, I)
    (``n_starts`` rows, numpy stream ``[seed, 7919]``, apart from ``default_rng(seed)``, which evaluations draw).
    The DP levels, GITS's (``info["gits_sigmas"]``) and every ``baselines`` entry (N noisy levels then 0) are
    scored by the global error E = :func:`trajectory_metric` (``metric``) of the real solver's x_0(levels)
    against the teacher's X_G (each distinct list once; ``info["rms"]``, ``info["baseline_rms"]``: the paired
    RMS of the same outputs);
    the best is the start of ``refine`` further evaluations of coordinate search (default
    :func:`default_refine`: 40, fewer beyond 10 NFE), so the result's E is <=
    every baseline's on these starts. The search's result replaces its start only if its E is also lower on
    ``validation`` held-out starts (stream ``[seed, 7920]``; 0: no check). ``pure_noise`` (flow models): every
    chain starts at sigma = inf, x_T is pure noise; the search then keeps the best start (the coordinate search
    moves finite levels only). ``info["error_ci"]``: a bootstrap interval of E over the starts;
    ``info["vs_best_other"]``: the paired difference to the best other list (``rival``; a baseline or GITS with
    other levels) and its interval (:func:`bootstrap_error`).
    """
    t0 = time.perf_counter()
    check_choice(solver, "trajectory solver", TRAJECTORY_SOLVERS)
    n_starts = check_positive_int(n_starts, "n_starts")
    steps = check_positive_int(steps, "steps")
    validation = int(validation)
    refine = default_refine(solver, steps) if refine is None else int(refine)
    check_choice(metric, "trajectory metric", TRAJECTORY_METRICS)
    if refine < 0 or validation < 0:
        raise PifsError(f"refine and validation must be >= 0, got {refine}, {validation}")
    if metric == "w2" and (n_starts < 2 or validation == 1):
        raise PifsError(f"the w2 metric needs >= 2 starts and 0 or >= 2 held-out starts, got {n_starts}, {validation}")
    advance = progress or (lambda k=1: None)
    calls = [0]

    def counted(x, l):
        calls[0] += 1
        advance(1)
        return denoiser(x, l)

    grid = teacher_grid(sigma_range[0], sigma_range[1], grid_size, pure_noise)
    x_T = np.random.default_rng([seed, 7919]).standard_normal((n_starts, d))
    x_val = np.random.default_rng([seed, 7920]).standard_normal((validation, d))
    both = run_teacher(counted, np.concatenate([x_T, x_val]), grid)  # one batched teacher for both sets
    teach = Teacher(grid, both.X[:, :n_starts], both.D[:, :n_starts], both.model_calls)
    C1, C2, final = local_errors(teach, solver)
    idx, local = dp_levels(C1, C2, final, steps)
    dp_sig = np.append(grid[idx], 0.0)
    sampler = get_sampler(solver)
    target = teach.X[-1]

    seen: dict[bytes, float] = {}  # levels -> E: a list met twice (GITS = DP for DDIM, the search's start) runs once
    # x_0 of the start lists (baselines, DP, GITS: their paired RMS and the bootstrap's rival), not of every search
    # trial (B x d each); the best list's x_0 and model calls, keyed by the levels passed so far: a search move
    # of level k reruns from call k
    outputs: dict[bytes, np.ndarray] = {}
    best_run: dict = {"value": np.inf, "calls": {}, "x0": None}

    def error(chain: Chain, x: np.ndarray, x_ref: np.ndarray, den=counted) -> tuple[float, np.ndarray]:
        x0 = sampler(den, x, chain)
        return trajectory_metric(x0, x_ref, metric), x0

    def global_error(chain: Chain) -> float:
        key = chain.logsnr.tobytes()
        if key not in seen:
            past: list[float] = []
            calls_now: dict = {}

            def den(x, l):  # reuse a call of the best list only for the same levels so far and the same input
                past.append(float(l))
                hit = best_run["calls"].get(tuple(past))
                out = hit[1] if hit is not None and np.array_equal(hit[0], x) else counted(x, l)
                calls_now[tuple(past)] = (np.array(x), np.array(out))  # copies: a sampler may update in place
                return np.array(out)

            seen[key], x0 = error(chain, x_T, target, den)
            if key in start_keys:
                outputs[key] = x0
            if seen[key] < best_run["value"]:
                best_run.update(value=seen[key], calls=calls_now, x0=x0)
        return seen[key]

    if solver in ("ddim", "euler"):
        gits_sig = dp_sig
    else:  # GITS: the same DP with the first-order (DDIM) step, whatever the solver
        gC1, _, gfinal = local_errors(teach, "ddim")
        gits_sig = np.append(grid[dp_levels(gC1, None, gfinal, steps)[0]], 0.0)
    starts = {"dp": _chain(dp_sig, "dp"), "gits": _chain(gits_sig, "gits")}
    for name, sig in (baselines or {}).items():
        sig = np.asarray(sig, dtype=float)
        if sig.size == steps + 1 and sig[-1] == 0.0 and not np.isnan(sig).any():
            starts[name] = _chain(sig, name)
    start_keys = {ch.logsnr.tobytes() for ch in starts.values()}
    scores = {name: global_error(ch) for name, ch in starts.items()}
    best = min(scores, key=lambda k: scores[k])
    chain, value, history = starts[best], scores[best], [scores[best]]
    held_out = None
    if refine and np.isfinite(chain.sigmas).all():  # coordinate search in log sigma (the exact bench's oracle)
        from ..exact_bench import optimise_oracle

        finite = grid[np.isfinite(grid) & (grid > 0)]
        res = optimise_oracle(global_error, {best: chain}, (float(finite.min()), float(finite.max())),
                              budget=int(refine) + 1)  # + 1: the start, scored above already
        history = history + res.history[1:]
        keep = True
        if validation and res.value < value:
            ref = both.X[-1, n_starts:]
            held_out = {"starts": validation, "start": error(chain, x_val, ref)[0],
                        "refined": error(res.chain, x_val, ref)[0]}
            keep = held_out["kept"] = bool(held_out["refined"] <= held_out["start"])
        if keep:
            chain, value = res.chain, res.value
    key = chain.logsnr.tobytes()
    x0 = outputs.get(key, best_run["x0"])  # a start list, else the search's best (kept only if lowest)
    rival = min((k for k in scores if k != "dp" and starts[k].logsnr.tobytes() != key), key=lambda k: scores[k],
                default=None)
    sure = bootstrap_error(x0, target, metric, seed=seed,
                           rival=None if rival is None else outputs[starts[rival].logsnr.tobytes()])
    sure["rival"] = rival
    info = {"teacher": f"DPM-Solver++(3M) on {grid.size - 1} levels uniform in log sigma, then 0; "
                       f"{n_starts} starts (+ {validation} held out)",
            "teacher_calls": teach.model_calls, "grid_size": grid.size - 1, "n_starts": n_starts,
            "start_schedule": best, "evaluations": len(seen), "refine": refine,
            "history": [float(v) for v in history],
            "held_out": held_out, "metric": metric, "rms": trajectory_metric(x0, target, "rms"),
            "error_ci": sure.pop("ci"), "vs_best_other": sure,
            "baseline_errors": {k: v for k, v in scores.items() if k != "dp"},
            "baseline_rms": {k: trajectory_metric(outputs[c.logsnr.tobytes()], target, "rms")
                             for k, c in starts.items() if k != "dp"},
            "gits_sigmas": gits_sig.tolist()}
    return TrajectoryDesign(np.asarray(chain.sigmas, float), solver, local, float(value), dp_sig, scores["dp"],
                            calls[0], time.perf_counter() - t0, info)
