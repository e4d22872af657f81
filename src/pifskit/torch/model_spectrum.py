"""The model's own per-level spectrum: Jacobian gains of a denoiser at a handful of noise levels.

g_b(sigma) = E_y[b^T J(y; sigma) b] (VE units y = x0 + sigma eps; lambda / (lambda + sigma^2) for Gaussian
data along a principal direction b), measured with JVPs for a fixed basis B (d x r: data PCA or the top
eigenvectors of the symmetrised mean Jacobian) plus one Hutchinson tail gain tr(P J P) / (d - r),
P = I - B B^T, at log-uniform levels refined where log lambda_eff changes most. Returns a
:class:`pifskit.design.level_spectrum.LevelSpectra` for :func:`pifskit.design.steps.optimal_steps`;
details in docs/design.md ("III against the model's own per-level spectrum").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from .._validate import PifsError, check_positive_int
from ..design.level_spectrum import GAIN_CLIP, LevelSpectra

#: rows of one batched JVP call (states x directions)
JVP_BATCH = 512

VPDenoiser = Callable[[torch.Tensor, float], torch.Tensor]


NumpyDenoiser = Callable[[np.ndarray, float], np.ndarray]


def numpy_denoiser(denoise: VPDenoiser, dtype: torch.dtype, clip: bool = False) -> NumpyDenoiser:
    """denoiser(x (B, d) float64 VP, logsnr) -> x0 (float64 numpy, as :mod:`pifskit.samplers` take it), run in
    ``dtype`` and clamped to [-1, 1] when ``clip``."""

    def den(x: np.ndarray, logsnr: float) -> np.ndarray:
        with torch.no_grad():
            out = denoise(torch.as_tensor(x, dtype=dtype), float(logsnr))
            return (out.clamp(-1.0, 1.0) if clip else out).double().numpy()

    return den


class MixtureDenoiser(nn.Module):
    """The exact denoiser of a :class:`~pifskit.exact_models.GaussianMixtureModel` in torch (VP: D(x, logsnr)).

    D(x) = sum_k r_k(x) [mu_k + U_k diag(g_k) U_k^T (x - a mu_k)], g_k = a lam_k / (a^2 lam_k + s^2),
    r_k = softmax(log w_k - 1/2 sum log v_k - 1/2 ||U_k^T (x - a mu_k)||^2_{v_k^-1}); differentiable, so
    its JVPs are the closed-form Jacobian's.
    """

    def __init__(self, model, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.register_buffer("log_w", torch.as_tensor(np.log(model.weights), dtype=dtype))
        self.register_buffer("mu", torch.as_tensor(model.means, dtype=dtype))
        self.register_buffer("lam", torch.as_tensor(model.eigenvalues, dtype=dtype))
        self.register_buffer("U", torch.as_tensor(model.bases, dtype=dtype))
        self.register_buffer("mu_proj", torch.einsum("kdj,kd->kj", self.U, self.mu))
        self.d = int(model.d)

    def forward(self, x: torch.Tensor, logsnr: float) -> torch.Tensor:
        l = float(logsnr)
        a2, s2 = float(expit(l)), float(expit(-l))
        a = np.sqrt(a2)
        v = a2 * self.lam + s2                                         # (K, d)
        g = a * self.lam / v
        y = torch.einsum("bd,kdj->bkj", x, self.U) - a * self.mu_proj  # (B, K, d)
        logit = self.log_w - 0.5 * torch.log(v).sum(-1) - 0.5 * (y * y / v).sum(-1)
        r = torch.softmax(logit, dim=-1)                               # (B, K)
        z = torch.einsum("kdj,bkj->bkd", self.U, g * y)
        return r @ self.mu + (r[:, :, None] * z).sum(1)


def _ve(denoise: VPDenoiser, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """y -> D(y; sigma) in VE units: D_vp(a y, logsnr = -2 log sigma), a = 1 / sqrt(1 + sigma^2)."""
    a = 1.0 / np.sqrt(1.0 + sigma * sigma)
    l = -2.0 * np.log(sigma)
    return lambda y: denoise(a * y, l)


def _jvp(f, Y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """J(Y) T row by row (f acts per row): forward mode, falling back to the double-backward trick."""
    try:
        return torch.func.jvp(f, (Y,), (T,))[1]
    except Exception:  # a model without forward-mode rules
        return torch.autograd.functional.jvp(f, Y, T)[1]


class _Counter:
    def __init__(self):
        self.jvps = self.vjps = self.forwards = self.batched = 0

    @property
    def total(self) -> int:
        return self.jvps + self.vjps + self.forwards


def _quad_forms(f, Y: torch.Tensor, V: torch.Tensor, counter: _Counter) -> torch.Tensor:
    """q[s, j] = v_j^T J(y_s) v_j for states Y (S, d) and directions V (d, r), batched."""
    S, r = Y.shape[0], V.shape[1]
    out = torch.empty(S, r, dtype=Y.dtype)
    Vt = V.T.contiguous()
    per = max(1, JVP_BATCH // S)
    for j0 in range(0, r, per):
        vs = Vt[j0:j0 + per]                                          # (c, d)
        c = vs.shape[0]
        Yb = Y.repeat_interleave(c, dim=0)
        Tb = vs.repeat(S, 1)
        with torch.enable_grad():
            JT = _jvp(f, Yb, Tb).detach()
        out[:, j0:j0 + c] = (JT * Tb).sum(-1).reshape(S, c)
        counter.jvps += S * c
        counter.batched += 1
    return out


def _sym_matvec(f, Y: torch.Tensor, V: torch.Tensor, counter: _Counter) -> torch.Tensor:
    """mean_s (J_s + J_s^T)/2 V for V (d, q): one JVP and one VJP per state and column."""
    S, q = Y.shape[0], V.shape[1]
    Yb = Y.repeat_interleave(q, dim=0)
    Tb = V.T.repeat(S, 1)
    with torch.enable_grad():
        J = _jvp(f, Yb, Tb).detach()
        Jt = torch.func.vjp(f, Yb.clone().requires_grad_(False))[1](Tb)[0].detach()
    counter.jvps += S * q
    counter.vjps += S * q
    counter.batched += 2
    return (0.5 * (J + Jt)).reshape(S, q, -1).mean(0).T                 # (d, q)


def _krylov_basis(f, Y: torch.Tensor, r: int, oversample: int, power_iters: int, gen: torch.Generator,
                  counter: _Counter) -> tuple[np.ndarray, np.ndarray]:
    """Top-r eigenpairs of the state-averaged symmetrised Jacobian (randomized subspace iteration)."""
    d = Y.shape[1]
    q = min(d, r + oversample)
    Q = torch.eye(d, dtype=Y.dtype) if q >= d else torch.linalg.qr(torch.randn(d, q, generator=gen, dtype=Y.dtype))[0]
    for _ in range(0 if q >= d else power_iters + 1):
        Q, _ = torch.linalg.qr(_sym_matvec(f, Y, Q, counter))
    T = Q.T @ _sym_matvec(f, Y, Q, counter)
    w, U = torch.linalg.eigh(0.5 * (T + T.T))
    order = torch.argsort(w, descending=True)[:r]
    return (Q @ U[:, order]).numpy(), w[order].numpy()


def _tail_gain(f, Y: torch.Tensor, B: torch.Tensor, probes: int, gen: torch.Generator, counter: _Counter) -> float:
    """Hutchinson: tr(P J P) / (d - r), P = I - B B^T, Rademacher probes projected by P."""
    d, r = B.shape
    Z = (torch.randint(0, 2, (d, probes), generator=gen) * 2 - 1).to(Y.dtype)
    Z = Z - B @ (B.T @ Z)
    return float(_quad_forms(f, Y, Z, counter).mean()) / (d - r)     # mean z^T J z


def _level_generator(seed: int, sigma: float) -> torch.Generator:
    """The fixed noise seed of one level."""
    return torch.Generator().manual_seed(int(seed) * 1000003 + int(round(np.log(sigma) * 1e6)) % 999983)


def default_levels(sigma_min: float, sigma_max: float, n_levels: int) -> np.ndarray:
    """n_levels VE levels log-uniform over [sigma_min, sigma_max] (ascending)."""
    n = check_positive_int(n_levels, "levels")
    if n == 1:
        return np.array([np.sqrt(sigma_min * sigma_max)])
    return np.exp(np.linspace(np.log(sigma_min), np.log(sigma_max), n))


def mean_jacobian_gains(denoise: VPDenoiser, x0: np.ndarray, sigmas, basis: np.ndarray, *, tail_probes: int = 8,
                        seed: int = 0, dtype: torch.dtype = torch.float64,
                        counter: _Counter | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """g[l, k] = mean_s b_k^T J(x0_s + sigma_l eps; sigma_l) b_k for the columns of ``basis`` (d, r), plus a last
    column with the Hutchinson tail gain when r < d. VE units; a fixed seed per level."""
    counter = counter or _Counter()
    X0 = torch.as_tensor(np.ascontiguousarray(x0, dtype=np.float64), dtype=dtype)
    B = torch.as_tensor(np.ascontiguousarray(basis, dtype=np.float64), dtype=dtype)
    d, r = B.shape
    rows = []
    for s in np.asarray(sigmas, dtype=float):
        gen = _level_generator(seed, s)
        Y = X0 + float(s) * torch.randn(X0.shape, generator=gen, dtype=dtype)
        f = _ve(denoise, float(s))
        g = _quad_forms(f, Y, B, counter).mean(0).numpy()
        if r < d:
            g = np.append(g, _tail_gain(f, Y, B, tail_probes, gen, counter))
        rows.append(g)
        if progress is not None:
            progress(1)
    return np.array(rows)


def regression_gains(denoise: VPDenoiser, x0: np.ndarray, sigmas, basis: np.ndarray, *, seed: int = 0,
                     dtype: torch.dtype = torch.float64, counter: _Counter | None = None, batch: int = JVP_BATCH,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """g[l, k] = sum_s (b_k . (D_s - m)) (b_k . (y_s - m)) / sum_s (b_k . (y_s - m))^2: the least-squares linear
    response of the denoiser along b_k (m = mean of x0), plus the complement's pooled ratio when r < d.

    By Tweedie E[D(y) y^T] = E[x0 y^T], so for the optimal denoiser this is the data's own Gaussian gain
    b^T S b / (b^T S b + sigma^2) (S = Cov x0) in expectation, at every level -- a model-free design
    for a perfect model; a trained model's departures from it are what it measures. Forwards only."""
    counter = counter or _Counter()
    X0 = np.ascontiguousarray(x0, dtype=np.float64)
    B = np.ascontiguousarray(basis, dtype=np.float64)
    d, r = B.shape
    mu = X0.mean(0)
    rows = []
    for s in np.asarray(sigmas, dtype=float):
        Y = torch.as_tensor(X0, dtype=dtype) + float(s) * torch.randn(X0.shape, generator=_level_generator(seed, s),
                                                                      dtype=dtype)
        f = _ve(denoise, float(s))
        with torch.no_grad():
            D = torch.cat([f(Y[i:i + batch]) for i in range(0, Y.shape[0], batch)]).double().numpy()
        counter.forwards += Y.shape[0]
        counter.batched += -(-Y.shape[0] // batch)
        yc, dc = Y.double().numpy() - mu, D - mu
        py, pd = yc @ B, dc @ B
        g = (pd * py).sum(0) / (py * py).sum(0)
        if r < d:
            g = np.append(g, ((dc * yc).sum() - (pd * py).sum()) / ((yc * yc).sum() - (py * py).sum()))
        rows.append(g)
        if progress is not None:
            progress(1)
    return np.array(rows)


def _refine_points(sigmas: np.ndarray, gains: np.ndarray, count: np.ndarray, k: int) -> np.ndarray:
    """Midpoints (in log sigma) of the k intervals where the variance-weighted |Delta log lambda_eff| is largest."""
    g = np.clip(gains, GAIN_CLIP, 1 - GAIN_CLIP)
    v = 2 * np.log(sigmas)[:, None] + np.log(g) - np.log1p(-g)        # log lambda_eff
    w = count * np.exp(v).mean(0)
    score = (np.abs(np.diff(v, axis=0)) * w).sum(1) / w.sum()
    pick = np.argsort(-score)[:k]
    u = np.log(sigmas)
    return np.exp(0.5 * (u[pick] + u[pick + 1]))


def estimate_level_spectra(denoise: VPDenoiser, x0, sigma_range: tuple[float, float], *, n_levels: int = 8,
                           refine: int = 4, levels=None, basis="pca", rank: int | None = None,
                           n_states: int = 8, tail_probes: int = 8, oversample: int = 8, power_iters: int = 2,
                           seed: int = 0, dtype: torch.dtype = torch.float64, name: str = "model",
                           basis_name: str = "given basis", extra_calls: int = 0, gains: str = "jacobian",
                           regression_states: int = 512,
                           progress: Callable[[int], None] | None = None) -> LevelSpectra:
    """Per-level Jacobian gains of ``denoise`` (VP signature D(x, logsnr), rows of x flattened) -> LevelSpectra.

    ``x0``: clean points (n, d) -- the states' centres (the first ``n_states`` rows, after a seeded
    shuffle) and, for ``basis="pca"``, the PCA basis (all rows; needs n >= 2). ``basis``: "pca", "krylov"
    or an explicit (d, r) orthonormal array. ``rank``: directions kept (default min(d, 64)); the rest is
    one Hutchinson tail group. ``levels``: explicit VE levels (then no refinement).
    """
    t0 = time.perf_counter()
    X = np.asarray(x0, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or not np.isfinite(X).all():
        raise PifsError(f"x0 must be a finite (n, d) array of clean points, got shape {X.shape}")
    n, d = X.shape
    r = min(d, 64 if rank is None else check_positive_int(rank, "rank"))
    rng = np.random.default_rng(seed)
    states = X[rng.permutation(n)[:check_positive_int(n_states, "states")]]
    smin, smax = float(sigma_range[0]), float(sigma_range[1])
    if not (0 < smin < smax and np.isfinite(smax)):
        raise PifsError(f"need 0 < sigma_min < sigma_max (finite), got {smin:g}, {smax:g}")
    counter = _Counter()
    gen = torch.Generator().manual_seed(int(seed))
    lv = np.sort(np.asarray(levels, dtype=float)) if levels is not None else default_levels(smin, smax, n_levels)
    if isinstance(basis, str):
        if basis == "pca":
            if n < 2:
                raise PifsError("basis 'pca' needs at least 2 data rows")
            B = np.linalg.svd(X - X.mean(0), full_matrices=False)[2][:r].T
            basis_name = f"data PCA ({n} rows)"
        elif basis == "krylov":
            noise = torch.randn(states.shape, generator=gen, dtype=dtype)
            Y = torch.as_tensor(states, dtype=dtype) + float(lv[-1]) * noise
            B, _ = _krylov_basis(_ve(denoise, float(lv[-1])), Y, r, oversample, power_iters, gen, counter)
            basis_name = f"top-{r} eigenvectors of the mean symmetrised Jacobian at sigma = {lv[-1]:.3g}"
        else:
            raise PifsError(f"basis must be 'pca', 'krylov' or a (d, r) array, got {basis!r}")
    else:
        B = np.asarray(basis, dtype=np.float64)
        if B.ndim != 2 or B.shape[0] != d or B.shape[1] > d:
            raise PifsError(f"basis must be (d, r) = ({d}, <= {d}), got {B.shape}")
        if np.abs(B.T @ B - np.eye(B.shape[1])).max() > 1e-6:
            raise PifsError("basis columns must be orthonormal")
        B = B[:, :r]
    r = B.shape[1]
    count = np.ones(r) if r == d else np.append(np.ones(r), d - r)
    if gains not in ("jacobian", "regression"):
        raise PifsError(f"gains must be 'jacobian' or 'regression', got {gains!r}")
    if gains == "regression":
        reg_x = X[rng.permutation(n)[:check_positive_int(regression_states, "regression states")]]
        reg_x = np.resize(reg_x, (max(regression_states, reg_x.shape[0]), d)) if n < regression_states else reg_x

        measure = partial(regression_gains, denoise, reg_x, basis=B, seed=seed, dtype=dtype, counter=counter,
                          progress=progress)
    else:
        measure = partial(mean_jacobian_gains, denoise, states, basis=B, tail_probes=tail_probes, seed=seed,
                          dtype=dtype, counter=counter, progress=progress)
    gains_ = measure(lv)
    if levels is None and refine > 0 and lv.size >= 2:
        extra = _refine_points(lv, gains_, count, min(refine, lv.size - 1))
        lv, gains_ = np.concatenate([lv, extra]), np.vstack([gains_, measure(extra)])
        order = np.argsort(lv)
        lv, gains_ = lv[order], gains_[order]
    clipped = float(np.mean((gains_ < GAIN_CLIP) | (gains_ > 1 - GAIN_CLIP)))
    if gains == "regression":
        tail = "" if r == d else f"; tail: {d - r} directions share one pooled regression gain -- assumed isotropic"
        what = f"least-squares linear response (regression) gains over {reg_x.shape[0]} noisy states per level"
    else:
        tail = "" if r == d else (f"; tail: {d - r} directions share one gain, the Hutchinson estimate of "
                                  f"tr(P J P)/(d - r) ({tail_probes} probes per state) -- assumed isotropic")
        what = f"mean Jacobian gains b^T J b over {states.shape[0]} noisy states per level"
    source = f"model {name}: {what} at {lv.size} levels, basis {basis_name}, {r} directions{tail}"
    info = {"gains": gains, "model_calls": counter.total + int(extra_calls), "jvps": counter.jvps,
            "vjps": counter.vjps, "forwards": counter.forwards + int(extra_calls), "batched_calls": counter.batched,
            "states": int(states.shape[0]), "rank": int(r), "dimension": int(d), "gains_clipped_fraction": clipped,
            "seconds_estimate": time.perf_counter() - t0}
    ls = LevelSpectra.from_gains(lv, gains_, count, name=f"level spectra of {name}", source=source, info=info)
    object.__setattr__(ls, "_basis", B)
    object.__setattr__(ls, "_gains", gains_)
    return ls


@dataclass
class ModelEntry:
    """What the estimate needs from ``--model ENTRY``: a VP denoiser on flat rows, clean points, a basis."""

    name: str
    denoise: VPDenoiser
    d: int
    dtype: torch.dtype
    schedule: object = None
    x0: np.ndarray | None = None
    basis: object = None
    basis_name: str = ""
    x0_source: str = ""
    sample: Callable[[int, int], tuple[np.ndarray, int]] | None = None


def _mixture_entry(spec: str) -> ModelEntry:
    from ..exact_bench import parse_bench_data

    m = parse_bench_data(spec).model
    den = MixtureDenoiser(m)
    U = np.ascontiguousarray(np.linalg.eigh(m.moments()[1])[1][:, ::-1])
    x0 = m.sample(2000, np.random.default_rng(12345))
    return ModelEntry(f"{spec} (exact mixture, {m.K} components, d = {m.d})",
                      lambda x, l: den(x, l), m.d, torch.float64, None, x0, U,
                      "the mixture's principal axes (exact moments)", "2000 draws of the mixture")


def _checkpoint_entry(path: str) -> ModelEntry:
    from ..schedules import get_schedule
    from .adapter import ModelDenoiser
    from .checkpoint import load_checkpoint_model

    model, info = load_checkpoint_model(path)
    shape = tuple(info["image_shape"])
    sched = get_schedule(info["schedule"])
    if not hasattr(sched, "timestep_of_sigma"):
        raise PifsError(f"checkpoint schedule {info['schedule']!r} is not discrete; --model needs a pifskit "
                        "training checkpoint on a discrete schedule")
    md = ModelDenoiser(model, info["prediction_type"], "discrete", sample_shape=shape,
                       timestep_fn=lambda l: sched.timestep_of_sigma(np.exp(-0.5 * np.asarray(l, float))))
    d = int(np.prod(shape))

    def denoise(x: torch.Tensor, l: float) -> torch.Tensor:
        return md(x.reshape((x.shape[0],) + shape), l).reshape(x.shape[0], d)

    def sample(n: int, seed: int) -> tuple[np.ndarray, int]:
        """n DDIM samples (20 trailing steps) of the model; returns (x0, forward evaluations)."""
        from ..chains import make_chain
        from ..samplers import sample_ddim

        chain = make_chain(sched, 20, "trailing")
        xT = np.random.default_rng(seed).standard_normal((n, d))
        return sample_ddim(numpy_denoiser(denoise, torch.float32), xT, chain), n * chain.n_steps

    return ModelEntry(f"checkpoint {info['path']} ({info['arch']}, step {info['step']}, {info['prediction_type']})",
                      denoise, d, torch.float32, sched, sample=sample)


def load_model_entry(entry: str) -> ModelEntry:
    """``gmm:digits`` / ``gmm:mnist:PATH`` (exact mixture) or a pifskit checkpoint (run folder or file)."""
    if entry.startswith("gmm:"):
        return _mixture_entry(entry)
    if os.path.exists(entry):
        return _checkpoint_entry(entry)
    raise PifsError(f"--model {entry!r}: neither an existing pifskit checkpoint nor gmm:digits / gmm:mnist:PATH")


def level_spectra_for_entry(me: ModelEntry, sigma_range: tuple[float, float], *, x0: np.ndarray | None = None,
                            x0_source: str = "", n_levels: int = 8, refine: int = 4, n_states: int = 8,
                            rank: int | None = None, seed: int = 0, gains: str = "jacobian",
                            progress: Callable[[int], None] | None = None) -> LevelSpectra:
    """The model's level spectra over ``sigma_range``: clean points from ``x0`` (data), else the entry's own
    (the mixture's draws), else the model's DDIM samples (counted in model_calls); basis: the entry's, else
    the PCA of the data, else Krylov."""
    extra = 0
    if x0 is None and me.x0 is not None:
        x0, x0_source = me.x0, me.x0_source
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64).reshape(np.shape(x0)[0], -1)
        if x0.shape[1] != me.d:
            raise PifsError(f"data rows have {x0.shape[1]} values, the model takes {me.d}")
    basis, basis_name = me.basis, me.basis_name
    if x0 is None:
        x0, extra = me.sample(max(n_states, 2) if gains == "jacobian" else 256, seed)
        x0_source = f"{x0.shape[0]} DDIM samples of the model (20 steps)"
        basis, basis_name = "krylov", ""
    elif basis is None:
        basis = "pca"
    ls = estimate_level_spectra(me.denoise, x0, sigma_range, n_levels=n_levels, refine=refine, basis=basis,
                                rank=rank, n_states=n_states, seed=seed, dtype=me.dtype, name=me.name,
                                basis_name=basis_name, extra_calls=extra, gains=gains, progress=progress)
    ls.info["states_from"] = x0_source
    return ls
