"""Solver-aware criterion III: the output law of each deterministic solver on Gaussian data, in closed form.

In VE units (y = x / a, y = x0 + sigma eps) the exact denoiser of Gaussian data is D(y; sigma) = g(sigma) y,
g = lambda / (lambda + sigma^2), per eigen-direction, so every deterministic solver is a linear recurrence
z_{i+1} = A_i(lambda) z_i on z = (y, history) and maps the start noise xi to y_N = m(lambda) xi,

    m = e_0^T A_{N-1} ... A_0 z_0 / xi,   W2^2 = sum_k (sqrt(lambda_k) - |m_k|)^2,
    KL = 1/2 sum_k (v_k / lambda_k - 1 - log(v_k / lambda_k)),  v = m^2.

``lam`` may be a :class:`~pifskit.design.level_spectrum.LevelSpectra` (gain g_k(sigma) per direction; the
output is compared with that model's exact flow). Gradients in log sigma: complex step on the few levels
each A_i depends on, with forward states and backward co-states (O(N K m^2)). The update of each solver
and the start laws: docs/design.md#iii-for-every-solver-the-charged-start-flow-models-issue-11.
"""

from __future__ import annotations

import numpy as np

from .._validate import PifsError, as_float_array, check_choice

#: solvers with a closed form (state size = 1 + history length)
SOLVERS: tuple[str, ...] = ("ddim", "euler", "heun", "dpmpp2m", "dpmpp3m", "ipndm")
_STATE = {"ddim": 1, "euler": 1, "heun": 1, "dpmpp2m": 2, "dpmpp3m": 3, "ipndm": 4}
#: which of the window slots (sigma_{i-2}, sigma_{i-1}, sigma_i, sigma_{i+1}) a step matrix depends on
_SLOTS = {"ddim": (2, 3), "euler": (2, 3), "heun": (2, 3), "ipndm": (2, 3), "dpmpp2m": (1, 2, 3),
          "dpmpp3m": (0, 1, 2, 3)}
START_LAWS = ("prior", "prior-ve", "marginal")

_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
_H = 1e-20  # complex step in log sigma


def _matrices(solver: str, S: list, lam: np.ndarray, idx: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Step matrices A_i(lambda), shape (n, K, m, m). ``S`` = [sigma_{i-2}, sigma_{i-1}, sigma_i, sigma_{i+1}]
    as (n, 1) arrays (may be complex; entries a step does not use are finite dummies). The updates:
    docs/design.md (solver section)."""
    s_m2, s_m1, s0, s1 = S
    n, K = s0.shape[0], lam.size
    m = _STATE[solver]
    dt = np.result_type(s0, s1, float)
    A = np.zeros((n, K, m, m), dtype=dt)
    g0 = _gain(lam, s0)
    rho = s1 / s0
    if solver in ("ddim", "euler"):
        A[..., 0, 0] = rho + (1.0 - rho) * g0
        return A
    if solver == "heun":
        ae = rho + (1.0 - rho) * g0
        s1_safe = np.where(last[:, None], 1.0, s1)
        g1 = _gain(lam, s1_safe)
        heun = 1.0 + 0.5 * (s1_safe - s0) * ((1.0 - g0) / s0 + (1.0 - g1) / s1_safe * ae)
        A[..., 0, 0] = np.where(last[:, None], ae, heun)
        return A
    if solver == "ipndm":
        slope = (1.0 - g0) / s0                      # d = slope * y
        step = s1 - s0
        order = np.minimum(idx + 1, 4)
        coef = np.zeros((n, 4))
        for k, c in _AB.items():
            coef[order == k, :k] = c
        A[..., 0, 0] = 1.0 + step * coef[:, :1] * slope
        for j in range(1, 4):
            A[..., 0, j] = np.broadcast_to(step * coef[:, j:j + 1], (n, K))
        A[..., 1, 0] = slope
        A[..., 2, 1] = 1.0
        A[..., 3, 2] = 1.0
        return A
    # exponential integrators in h = log(s / s'); the last step (s' = 0) is special-cased below
    s1_safe = np.where(last[:, None], 0.5 * s0, s1)
    rho_s = s1_safe / s0
    h = np.log(s0 / s1_safe)
    h1 = np.log(s_m1 / s0)
    if solver == "dpmpp2m":
        second = (idx >= 1) & ~last
        c = np.where(second[:, None], h / (2.0 * h1), 0.0)         # 1 / 2r, r = h_prev / h
        A[..., 0, 0] = np.where(last[:, None], g0, rho_s + (1.0 - rho_s) * (1.0 + c) * g0)
        A[..., 0, 1] = np.broadcast_to(np.where(last[:, None], 0.0, -(1.0 - rho_s) * c), (n, K))
        A[..., 1, 0] = g0
        return A
    if solver == "dpmpp3m":
        h2 = np.log(s_m2 / s_m1)
        phi2 = (rho_s - 1.0) / h + 1.0
        phi3 = phi2 / h - 0.5
        one = (idx == 1)[:, None]
        three = (idx >= 2)[:, None]
        r0, r1 = h1 / h, h2 / h
        # coefficients on (D, D_prev, D_prev2)
        cD = 1.0 - rho_s + np.where(one, phi2 / r0, 0.0)
        c1 = np.where(one, -phi2 / r0, 0.0)
        # third order: d1_0 = (D - D1)/r0, diff = d1_0 - (D1 - D2)/r1, d1 = d1_0 + diff r0/(r0+r1), d2 = diff/(r0+r1)
        q = r0 + r1
        diff = (1.0 / r0, -1.0 / r0 - 1.0 / r1, 1.0 / r1)
        d10 = (1.0 / r0, -1.0 / r0, 0.0)
        t = [phi2 * (d10[k] + diff[k] * r0 / q) - phi3 * diff[k] / q for k in range(3)]
        cD = np.where(three, 1.0 - rho_s + t[0], cD)
        c1 = np.where(three, t[1], c1)
        c2 = np.where(three, t[2], np.zeros_like(c1))
        lastc = last[:, None]
        A[..., 0, 0] = np.where(lastc, g0, rho_s + cD * g0)
        A[..., 0, 1] = np.broadcast_to(np.where(lastc, 0.0, c1), (n, K))
        A[..., 0, 2] = np.broadcast_to(np.where(lastc, 0.0, c2), (n, K))
        A[..., 1, 0] = g0
        A[..., 2, 1] = 1.0
        return A
    raise PifsError(f"unknown solver {solver!r}")  # pragma: no cover


def _is_level_model(lam) -> bool:
    """A per-level linear model (:class:`pifskit.design.level_spectrum.LevelSpectra`) instead of eigenvalues."""
    return hasattr(lam, "gain") and hasattr(lam, "target_std")


def _model(lam):
    """``lam`` as eigenvalues (a float array) or the per-level model itself."""
    return lam if _is_level_model(lam) else np.asarray(lam, dtype=float)


def _gain(lam, s):
    """g(s) per direction: lambda / (lambda + s^2), or the level model's g_k(s) (s may be complex)."""
    return lam.gain(s) if _is_level_model(lam) else lam / (lam + s * s)


def _target(lam) -> np.ndarray:
    """The std the output is compared with: sqrt(lambda), or the level model's exact-flow std."""
    return lam.target_std() if _is_level_model(lam) else np.sqrt(lam)


def _start_std(sigma0, lam, start: str):
    """VE std of the start law at the (finite) first level sigma0: sqrt(1 + sigma0^2) ("prior"), sigma0
    ("prior-ve"), sqrt(lambda + sigma0^2) ("marginal"; a level model: its variance at sigma0)."""
    ones = np.ones(lam.size)
    if start == "prior":
        return np.sqrt(1.0 + sigma0 * sigma0) * ones
    if start == "prior-ve":
        return sigma0 * ones
    var = lam.variance(np.array([[sigma0]]))[0] if _is_level_model(lam) else lam
    return np.sqrt(var + sigma0 * sigma0)


def _split(sigmas) -> tuple[np.ndarray, bool]:
    sig = as_float_array(sigmas, "sigmas", ndim=1, allow_inf=True)
    if sig.size < 2:
        raise PifsError("need at least 2 levels (1 step)")
    if sig[-1] != 0.0:
        raise PifsError("solver-aware W2 needs a chain that lands clean (last sigma 0)")
    if (sig < 0).any() or not (np.diff(sig) < 0).all() or np.isinf(sig[1:]).any():
        raise PifsError("sigmas must be >= 0, strictly decreasing, and only the first may be inf")
    pure = bool(np.isinf(sig[0]))
    return (sig[1:] if pure else sig), pure


def _window(u: np.ndarray) -> list:
    """[sigma_{i-2}, sigma_{i-1}, sigma_i, sigma_{i+1}] for steps i = 0..n-1 from log-levels u (last = -inf)."""
    n = u.size - 1
    i = np.arange(n)
    cols = []
    for q in range(4):
        j = i - 2 + q
        jj = np.where(j < 0, 0, j)
        uq = u[jj]
        if q < 2:  # dummies before the chain start: a finite value above sigma_0 (never used by the masks)
            uq = np.where(j < 0, u[0] + (1.0 + np.abs(j)), uq)
        cols.append(np.exp(uq)[:, None])
    return cols


def output_gain(solver: str, sigmas, lam, start: str = "prior", grad: bool = False):
    """m(lambda): the chain's output std along each direction (sign kept), and optionally dm/dlog sigma_j.

    ``sigmas``: the levels, noisiest first, ending 0 (the first may be inf). Returns ``m`` (K,) or
    ``(m, dm)`` with dm of shape (L, K) for the L = len(sigmas) - 1 noisy levels (rows for an inf
    first level are 0).
    """
    check_choice(solver, "solver", SOLVERS)
    check_choice(start, "start", START_LAWS)
    lam = _model(lam)
    K = lam.size
    lev, pure = _split(sigmas)
    if lev.size == 1:  # [inf, 0]: x_0 = D(x_T) = 0
        m = np.zeros(K)
        return (m, np.zeros((1, K))) if grad else m
    with np.errstate(divide="ignore"):
        u = np.log(lev)
    n = lev.size - 1
    idx = np.arange(n)
    last = idx == n - 1
    M = _STATE[solver]
    if grad:  # one complex-step batch: copy q perturbs window slot q; every copy's real part is A itself
        slots = np.array(_SLOTS[solver])
        step = np.exp(1j * _H)
        S = [np.concatenate([c * step if q == col else c for q in slots]) for col, c in enumerate(_window(u + 0j))]
        Ac = _matrices(solver, S, lam, np.tile(idx, slots.size), np.tile(last, slots.size))
        Ac = Ac.reshape(slots.size, n, K, M, M)
        A, dA = Ac[0].real, Ac.imag / _H
    else:
        A = _matrices(solver, _window(u), lam, idx, last)
    r0 = lev[0] * np.ones(K) if pure else _start_std(lev[0], lam, start)
    if M == 1:  # scalar recurrence: prefix products forward, suffix products backward
        a = A[..., 0, 0]
        zs = (r0 * np.concatenate([np.ones((1, K)), np.cumprod(a, axis=0)]))[..., None]
        m = zs[n, :, 0].copy()
        if not grad:
            return m
        ws = np.concatenate([np.cumprod(a[:0:-1], axis=0)[::-1], np.ones((1, K))])[..., None]
    else:
        zs = np.empty((n + 1, K, M))
        zs[0] = 0.0
        zs[0, :, 0] = r0
        for i in range(n):
            zs[i + 1] = (A[i] @ zs[i, :, :, None])[..., 0]
        m = zs[n, :, 0].copy()
        if not grad:
            return m
        # backward co-states w_i = e0^T A_{n-1} ... A_{i+1}
        ws = np.empty((n, K, M))
        ws[n - 1] = 0.0
        ws[n - 1, :, 0] = 1.0
        for i in range(n - 1, 0, -1):
            ws[i - 1] = (ws[i, :, None, :] @ A[i])[:, 0, :]
    dm_full = np.zeros((n + 1, K))  # d m / d u_j for the levels of ``lev``
    contrib = np.einsum("qnkab,nkab->qnk", dA, ws[..., :, None] * zs[:n, :, None, :])
    j = idx[None, :] - 2 + slots[:, None]
    ok = (j >= 0) & (j <= n)
    np.add.at(dm_full, j[ok], contrib[ok])
    # the start std depends on sigma_0 (m is linear in r0)
    if pure or start == "prior-ve":
        dr = lev[0] * np.ones(K)
    elif start == "prior":
        dr = lev[0] ** 2 / np.sqrt(1.0 + lev[0] ** 2) * np.ones(K)
    else:  # a level model's d lambda(sigma_0) / d sigma_0 is left out (sigma_0 is fixed with the marginal start)
        dr = lev[0] ** 2 / r0
    dm_full[0] += m / r0 * dr
    dm = dm_full[:n]  # the last level (0) is not a variable
    if pure:
        dm = np.vstack([np.zeros((1, K)), dm])
    return m, dm


def solver_w2sq(solver: str, sigmas, lam, count, start: str = "prior", grad: bool = False):
    """W2^2 = sum_k count_k (sqrt(lambda_k) - |m_k|)^2 (and its gradient in log sigma of the noisy levels).

    ``lam`` may be a per-level model (:class:`~pifskit.design.level_spectrum.LevelSpectra`): the gains
    g_k(sigma_i) at each evaluation, and sqrt(lambda_k) replaced by the exact flow's output std t_k.
    """
    lam = _model(lam)
    count = np.asarray(count, dtype=float)
    if not grad:
        m = output_gain(solver, sigmas, lam, start)
        return float(np.sum(count * (_target(lam) - np.abs(m)) ** 2))
    m, dm = output_gain(solver, sigmas, lam, start, grad=True)
    resid = _target(lam) - np.abs(m)
    val = float(np.sum(count * resid**2))
    g = (-2.0 * count * resid * np.sign(m))[None, :] * dm
    return val, g.sum(axis=1)


def sw2_weights(count, n_projections: int = 1024, seed: int = 0, null: float = 0.0) -> np.ndarray:
    """(P, K) projection weights of spectrum bins for the sliced W2: w_pk = sum_{i in bin k} u_{p,i}^2.

    For u uniform on the unit sphere of R^d (d = sum(count) + null, ``null`` the zero-variance directions)
    these are exactly w_k = X_k / (sum_j X_j + X_0), X_k ~ chi2(count_k), X_0 ~ chi2(null), independent
    (u = g / |g|, g standard normal). Drawn from ``seed``; vectorised.
    """
    c = as_float_array(count, "count", ndim=1)
    if (c <= 0).any():
        raise PifsError("sliced W2: bin counts must be > 0")
    if int(n_projections) < 1:
        raise PifsError(f"sliced W2 needs >= 1 projection, got {n_projections}")
    rng = np.random.default_rng(seed)
    x = rng.chisquare(c[None, :], size=(int(n_projections), c.size))
    tot = x.sum(axis=1)
    if null > 0:
        tot = tot + rng.chisquare(float(null), size=int(n_projections))
    return x / tot[:, None]


def _sw2_terms(m, target, weights) -> tuple[np.ndarray, np.ndarray]:
    """Per-projection 1-D W2 residuals r_p = sqrt(w_p . m^2) - sqrt(w_p . t^2) and sqrt(w_p . m^2)."""
    sa = np.sqrt(weights @ (m * m))
    return sa - np.sqrt(weights @ (target * target)), sa


def solver_sw2sq(solver: str, sigmas, lam, weights, start: str = "prior", grad: bool = False):
    """Sliced W2^2 of the solver's output law N(0, diag m^2) against the data's N(0, diag t^2), t = sqrt(lambda):

        SW2^2 = E_u (sqrt(sum_k w_k(u) m_k^2) - sqrt(sum_k w_k(u) t_k^2))^2,

    the expectation replaced by the mean over the fixed rows of ``weights`` (:func:`sw2_weights`; both laws
    are diagonal in one basis, so only the bin weights of u matter). With ``grad``: also the gradient in
    log sigma of the noisy levels, d/du_j = mean_p 2 r_p / sa_p sum_k w_pk m_k dm_k/du_j (chain rule through
    :func:`output_gain`). ``lam`` may be a per-level model (then t_k is its exact flow's std).
    """
    lam = _model(lam)
    W = np.asarray(weights, dtype=float)
    if W.ndim != 2 or W.shape[1] != lam.size:
        raise PifsError(f"sliced W2: weights must be (projections, {lam.size}), got shape {W.shape}")
    target = _target(lam)
    if not grad:
        r, _ = _sw2_terms(output_gain(solver, sigmas, lam, start), target, W)
        return float(np.mean(r * r))
    m, dm = output_gain(solver, sigmas, lam, start, grad=True)
    r, sa = _sw2_terms(m, target, W)
    coef = np.divide(2.0 * r, sa, out=np.zeros_like(sa), where=sa > 0) / r.size  # sa = 0 only when m = 0
    dval_dm = (coef @ W) * m
    return float(np.mean(r * r)), dm @ dval_dm


def sw2_standard_error(solver: str, sigmas, lam, weights, start: str = "prior") -> float:
    """Monte-Carlo standard error of :func:`solver_sw2sq`'s mean over the P projections: std(r_p^2) / sqrt(P)."""
    lam = _model(lam)
    r, _ = _sw2_terms(output_gain(solver, sigmas, lam, start), _target(lam), np.asarray(weights, float))
    return float(np.std(r * r, ddof=1) / np.sqrt(r.size)) if r.size > 1 else float("nan")


def solver_kl(solver: str, sigmas, lam, count, start: str = "prior") -> float:
    """KL(sample law || data law) = 1/2 sum_k count_k (v/lambda - 1 - log(v/lambda)), v = m^2 (inf if some m = 0)."""
    lam = _model(lam)
    m = output_gain(solver, sigmas, lam, start)
    ratio = m * m / _target(lam) ** 2
    with np.errstate(divide="ignore"):
        return float(0.5 * np.sum(np.asarray(count, float) * (ratio - 1.0 - np.log(ratio))))
