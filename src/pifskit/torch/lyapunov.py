"""Numerical finite-time Lyapunov spectrum of a DDIM chain (theory section 5), matrix-free.

Lambda_j = log sigma_j(M), M = J_{N-1} ... J_0 along a trajectory (totals over the N steps, not rates),
by ``torch.func`` JVPs / VJPs batched with ``vmap``: ``method="krylov"`` (randomized block Krylov SVD with
residual error bounds) or ``method="benettin"`` (QR-propagated frame; long-time exponents);
:func:`lyapunov_full_jacobian` is the jacrev + d x d QR baseline. See docs/torch.md#numerical-lyapunov-spectrum.
"""

from __future__ import annotations

import math
from itertools import groupby
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from .._validate import PifsError, check_positive_int
from ..lyapunov import kaplan_yorke
from .blocks import full_jacobian

StepFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class NumericalLyapunov:
    """Top-k finite-time exponents (per chain, sorted descending), averaged over M trajectories."""

    per_trajectory: np.ndarray  # (M, k), each row sorted descending
    d: int
    local: np.ndarray | None = None  # (M, N, k) per-step log|R_jj| (frame order), if requested
    meta: dict = field(default_factory=dict)
    error_bound_per_trajectory: np.ndarray | None = None  # (M, k) residual bounds (Krylov method)

    @property
    def error_bound(self) -> np.ndarray | None:
        """Per exponent: bound on |exponent - true|, averaged over trajectories (bounds the mean's error)."""
        b = self.error_bound_per_trajectory
        return None if b is None else b.mean(axis=0)

    @property
    def converged(self) -> bool | None:
        """Whether every exponent's bound met the tolerance (None: method without bounds)."""
        return self.meta.get("converged")

    @property
    def k(self) -> int:
        return int(self.per_trajectory.shape[1])

    @property
    def exponents(self) -> np.ndarray:
        """Mean over trajectories of the sorted exponents."""
        return self.per_trajectory.mean(axis=0)

    @property
    def spread(self) -> np.ndarray:
        """Standard deviation over trajectories (0 for one trajectory)."""
        M = self.per_trajectory.shape[0]
        return self.per_trajectory.std(axis=0, ddof=1) if M > 1 else np.zeros(self.k)

    @property
    def kaplan_yorke(self) -> float:
        """KY dimension of the mean exponents (a lower bound when k < d and all k partial sums are >= 0)."""
        return kaplan_yorke(self.exponents)

    @property
    def ky_is_lower_bound(self) -> bool:
        return bool(self.k < self.d and np.sum(self.exponents) >= 0)

    def to_dict(self) -> dict:
        kyt = np.array([kaplan_yorke(row) for row in self.per_trajectory])
        return {"k": self.k, "d": self.d, "trajectories": int(self.per_trajectory.shape[0]),
                "exponents": self.exponents.tolist(), "spread": self.spread.tolist(),
                "kaplan_yorke": self.kaplan_yorke,
                "kaplan_yorke_spread": float(kyt.std(ddof=1)) if kyt.size > 1 else 0.0,
                "kaplan_yorke_is_lower_bound": self.ky_is_lower_bound, "converged": self.converged, **self.meta}


def random_frame(M: int, d: int, k: int, dtype=torch.float64, device=None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """M random orthonormal d x k frames (QR of Gaussian matrices, signs fixed), shape (M, d, k)."""
    return _orth_against(torch.randn((M, d, k), generator=generator, dtype=dtype, device=device), None)


@torch.no_grad()
def chain_trajectory(step: StepFn, n_steps: int, x_init: torch.Tensor) -> list[torch.Tensor]:
    """States x_0 .. x_N of the chain from ``x_init`` (batch)."""
    xs = [x_init]
    for i in range(n_steps):
        xs.append(step(xs[-1], i))
        if xs[-1].shape != x_init.shape:
            raise PifsError(f"step map returned shape {tuple(xs[-1].shape)}, expected {tuple(x_init.shape)}")
    return xs


def _flat_step(step: StepFn, i: int, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(v: torch.Tensor) -> torch.Tensor:
        return step(v.reshape(shape), i).reshape(shape[0], -1)

    return f


def _jvp_block(step: StepFn, i: int, shape: tuple[int, ...], x: torch.Tensor, V: torch.Tensor,
               chunk_size: int | None) -> torch.Tensor:
    """J_i V for a (M, d, b) block: b JVPs of step i at the flat states x (M, d), one vmapped call."""
    f = _flat_step(step, i, shape)
    with torch.no_grad():
        Z = vmap(lambda t: jvp(f, (x,), (t,))[1], chunk_size=chunk_size)(V.permute(2, 0, 1))
    return Z.permute(1, 2, 0)


def _vjp_block(step: StepFn, i: int, shape: tuple[int, ...], x: torch.Tensor, U: torch.Tensor,
               chunk_size: int | None) -> torch.Tensor:
    """J_i^T U for a (M, d, b) block: b VJPs of step i (one linearisation, vmapped pullback)."""
    f = _flat_step(step, i, shape)
    with torch.no_grad():
        _, pull = vjp(f, x)
        Z = vmap(lambda c: pull(c)[0], chunk_size=chunk_size)(U.permute(2, 0, 1))
    return Z.permute(1, 2, 0)


def _rescale(Z: torch.Tensor, logscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide each trajectory's block by its largest entry, accumulating the log of the factor (no overflow)."""
    s = Z.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(Z.dtype).tiny)
    return Z / s[:, None, None], logscale + s.double().log()


def _orth_against(X: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    """Orthonormal basis of X's part orthogonal to Q's columns (block Gram-Schmidt twice, then QR)."""
    if Q is not None:
        for _ in range(2):
            X = X - Q @ (Q.transpose(-2, -1) @ X)
    X, R = torch.linalg.qr(X)
    return X * torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).unsqueeze(-2)


def _clusters(ex: np.ndarray, bound: np.ndarray, rtol: float) -> list[list[int]]:
    """1-based [first, last] index ranges of neighbouring exponents closer than their bounds (or rtol)."""
    gap = -np.diff(ex)
    tol = np.maximum(bound[:-1] + bound[1:], rtol * np.maximum(1.0, np.abs(ex[:-1])))
    close = np.nan_to_num(gap, nan=np.inf) <= tol
    runs = (list(g) for key, g in groupby(range(close.size), key=close.__getitem__) if key)
    return [[r[0] + 1, r[-1] + 2] for r in runs]


def _quadratic(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Quadratic residual bound ||R_C||^2 / gap_C per Ritz value (clusters C: overlapping s +- r).

    s (M, kk) descending Ritz values, r (M, kk) their linear bounds. The gap of a cluster is
    estimated from the Ritz intervals outside it (below: the kk-th interval's top bounds every
    singular value not yet seen); no gap (cluster reaching kk) gives inf.
    """
    out = torch.full_like(s, math.inf)
    M, kk = s.shape
    for m in range(M):
        sm, rm = s[m].tolist(), r[m].tolist()
        start = 0
        while start < kk:
            end = start
            while end + 1 < kk and sm[end] - rm[end] <= sm[end + 1] + rm[end + 1]:
                end += 1
            if end + 1 < kk:
                below = max(sm[j] + rm[j] for j in range(end + 1, kk))
                above = min((sm[j] - rm[j] for j in range(start)), default=math.inf)
                gap = min(sm[end] - below, above - sm[start])
                if gap > 0:
                    out[m, start:end + 1] = sum(x * x for x in rm[start:end + 1]) / gap
            start = end + 1
    return out


def _krylov(step: StepFn, N: int, flats: list[torch.Tensor], shape: tuple[int, ...], k: int, p: int,
            tol: float, max_matvecs: int, start: torch.Tensor, chunk_size: int | None,
            progress: Callable[[int], None] | None, deflate: bool = True) -> dict:
    """Randomized block Krylov SVD of M = J_N ... J_1 (Musco & Musco 2015) with Rayleigh-Ritz.

    Basis Q of span{Omega, (M^T M) Omega, ...}; SVD of Mhat Q = U S Y^T (Mhat = e^{-c} M) gives Ritz triplets
    (s_i, u_i, Q y_i) with the free residual r_i = Z y_i / s_i - s_i Q y_i (Z = Mhat^T Mhat Q); some singular
    value lies within e_i = ||r_i|| / sqrt(2) of s_i, so |Delta Lambda_i| <= -log(1 - e_i / s_i) (or the
    quadratic bound of :func:`_quadratic` when smaller).
    """
    M, d, _ = start.shape
    dtype = start.dtype
    V = _orth_against(start.double(), None).to(dtype)
    Qs, Ws, Zs = [], [], []
    c = None
    matvecs = fwd = 0
    history = []

    def backward(X: torch.Tensor) -> torch.Tensor:
        """Mhat^T X (float64) by VJP chains in the model dtype, rescaled at every step."""
        Z, lz = _rescale(X.to(dtype), torch.zeros(M, dtype=torch.float64, device=X.device))
        for i in reversed(range(N)):
            Z, lz = _rescale(_vjp_block(step, i, shape, flats[i], Z, chunk_size), lz)
        return Z.double() * torch.exp(lz - c)[:, None, None]

    def bounds(R: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(R, dim=-2) / math.sqrt(2.0)
        delta = torch.minimum(r, _quadratic(sc, r)) / sc
        return torch.where(delta < 1, -torch.log1p(-delta.clamp(max=1 - 1e-16)), torch.full_like(delta, math.inf))

    while True:
        b = V.shape[-1]
        W, lw = V, torch.zeros(M, dtype=torch.float64, device=V.device)
        for i in range(N):
            W, lw = _rescale(_jvp_block(step, i, shape, flats[i], W, chunk_size), lw)
        if c is None:
            c = lw.clone()
        W = W.double() * torch.exp(lw - c)[:, None, None]
        Z = backward(W)
        matvecs += 2 * b
        fwd += b
        if progress is not None:
            progress(2 * b * N)
        Qs.append(V.double())
        Ws.append(W)
        Zs.append(Z)
        Q, B, Zc = torch.cat(Qs, -1), torch.cat(Ws, -1), torch.cat(Zs, -1)
        U, S, Yh = torch.linalg.svd(B, full_matrices=False)
        kk = min(k + p, S.shape[-1])
        Y = Yh.transpose(-2, -1)[..., :kk]
        s = S[..., :kk]
        sc = s.clamp_min(torch.finfo(torch.float64).tiny)
        bound = bounds(Zc @ Y / sc[:, None, :] - s[:, None, :] * (Q @ Y), sc)
        ex = torch.log(sc) + c[:, None]
        ex = torch.where(s > 0, ex, torch.full_like(ex, -math.inf))
        scale = ex[..., :k].abs().clamp_min(1.0)
        worst = float((bound[..., :k] / scale).max())
        history.append(worst)
        m = Q.shape[-1]
        done = worst <= tol or m >= d
        # stagnation: the rounding floor (the worst bound did not decrease over two blocks)
        stalled = len(history) >= 3 and history[-1] >= history[-3]
        # next block: M^T M on the Ritz vectors still needed (top-k pairs above tol / 2, and the p
        # oversampling ones); converged pairs are deflated. The bounds hold for any subspace.
        if deflate:
            keep = (bound[..., :k] / scale > tol / 2).any(dim=0)
            sel = torch.cat([torch.nonzero(keep).reshape(-1), torch.arange(k, kk, device=keep.device)])
        else:
            sel = torch.arange(kk, device=Q.device)
        nb = min(int(sel.numel()), d - m)
        if done or stalled or nb == 0 or matvecs + 2 * nb > max_matvecs:
            break
        V = _orth_against(Zc @ Y[..., sel], Q)[..., :nb].to(dtype)
    if m >= d:
        # complete basis: Rayleigh-Ritz is the exact SVD up to rounding (the rounding floor bounds it)
        bound = torch.zeros_like(bound)
    elif worst > tol:
        # certify without squaring the dynamic range: Mhat^T u_i by kk explicit VJP chains
        bound = torch.minimum(bound, bounds(backward(U[..., :kk]) - s[:, None, :] * (Q @ Y), sc))
        matvecs += kk
    return {"ex": ex.cpu().numpy(), "bound": bound.cpu().numpy(), "matvecs": matvecs, "fwd": fwd,
            "basis": int(Q.shape[-1]), "history": history}


def lyapunov_spectrum(step: StepFn, n_steps: int, x_init: torch.Tensor, k: int, *, method: str = "krylov",
                      tol: float | None = None, oversample: int | None = None, max_matvecs: int | None = None,
                      refine: int = 0, ritz: bool = True,
                      frame: torch.Tensor | None = None, chunk_size: int | None = None,
                      generator: torch.Generator | None = None, return_local: bool = False,
                      progress: Callable[[int], None] | None = None, deflate: bool = True) -> NumericalLyapunov:
    """Top-k finite-time Lyapunov exponents Lambda_i = log sigma_i(J_N ... J_1) along M trajectories.

    ``x_init``: (M, *shape) level-0 states; ``step(x, i)`` batched, per sample. Totals over the N steps,
    sorted descending, averaged over trajectories. ``method="krylov"``: block size k + ``oversample``
    (default k // 4 + 4) until every bound is below ``tol`` x max(1, |Lambda_i|) (default 1e-6 float64,
    1e-3 float32), ``max_matvecs`` (default 40 (k + p)) or a stall; ``frame`` (M, d, b) replaces the random
    start; ``deflate=False`` is the classic block step. ``method="benettin"``: ``refine`` forward-backward
    sweeps and a ``ritz`` rotation align the frame first (``refine=0, ritz=False``: the one-pass method for
    long-time exponents); no error bounds. See docs/torch.md#numerical-lyapunov-spectrum.
    """
    N = check_positive_int(n_steps, "n_steps")
    M = x_init.shape[0]
    d = int(np.prod(x_init.shape[1:]))
    k = check_positive_int(k, "k")
    if k > d:
        raise PifsError(f"k = {k} exceeds the dimension d = {d}; k must lie in [1, {d}]")
    if method not in ("krylov", "benettin"):
        raise PifsError(f"method must be 'krylov' or 'benettin', got {method!r}")
    if refine < 0:
        raise PifsError("refine must be >= 0")
    shape = tuple(x_init.shape)
    xs = chain_trajectory(step, N, x_init.detach())
    flats = [x.reshape(M, -1) for x in xs]
    if method == "krylov":
        return _lyapunov_krylov(step, N, flats, shape, k, d, tol, oversample, max_matvecs, frame, chunk_size,
                                generator, return_local, progress, x_init, deflate)
    if frame is None:
        Q = random_frame(M, d, k, x_init.dtype, x_init.device, generator)
    else:
        if frame.shape != (M, d, k):
            raise PifsError(f"frame must have shape {(M, d, k)}, got {tuple(frame.shape)}")
        Q = frame.to(x_init.dtype)

    def forward_pass(Q: torch.Tensor, ritz_product: bool, report: bool):
        """Benettin pass: final frame, summed log|R_jj|, per-step logs, and the scaled product R_N..R_1."""
        total = torch.zeros((M, k), dtype=torch.float64, device=x_init.device)
        local = []
        Rtot = None
        for i in range(N):
            Q, R = torch.linalg.qr(_jvp_block(step, i, shape, flats[i], Q, chunk_size))
            logs = torch.diagonal(R, dim1=-2, dim2=-1).abs().double().log()
            total = total + logs
            local.append(logs)
            if ritz_product:
                Rtot = R if Rtot is None else R @ Rtot
                Rtot = Rtot / Rtot.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
            if report and progress is not None:
                progress(k)
        return Q, total, local, Rtot

    Q0 = Q
    for _ in range(int(refine)):
        Q, _, _, _ = forward_pass(Q0, False, False)
        for i in reversed(range(N)):
            Q, _ = torch.linalg.qr(_vjp_block(step, i, shape, flats[i], Q, chunk_size))
        Q0 = Q
    if ritz and k > 1:
        # Rayleigh-Ritz: M Q0 = Q_N Rtot, so the right singular vectors V of Rtot rotate Q0 onto
        # the Ritz frame of span(Q0), where M Q0 V has orthogonal columns (exact when k = d)
        _, _, _, Rtot = forward_pass(Q0, True, False)
        _, _, Vh = torch.linalg.svd(Rtot)
        Q0 = Q0 @ Vh.transpose(-2, -1)
    _, total, local, _ = forward_pass(Q0, False, True)
    per = np.sort(total.cpu().numpy(), axis=1)[:, ::-1].copy()
    loc = torch.stack(local, dim=1).cpu().numpy() if return_local else None
    passes = 1 + int(ritz and k > 1) + int(refine)
    return NumericalLyapunov(per, d, loc, {"method": "benettin-topk", "refine": int(refine), "ritz": bool(ritz),
                                           "n_steps": N, "jvps": passes * k * N, "vjps": int(refine) * k * N})


def _lyapunov_krylov(step, N, flats, shape, k, d, tol, oversample, max_matvecs, frame, chunk_size, generator,
                     return_local, progress, x_init, deflate=True) -> NumericalLyapunov:
    M = shape[0]
    if return_local:
        raise PifsError("return_local needs method='benettin' (the Krylov method has no per-step frame)")
    p = k // 4 + 4 if oversample is None else int(oversample)
    if p < 0:
        raise PifsError("oversample must be >= 0")
    p = min(p, d - k)
    tol = (1e-6 if x_init.dtype == torch.float64 else 1e-3) if tol is None else float(tol)
    if not tol > 0:
        raise PifsError("tol must be > 0")
    max_matvecs = 40 * (k + p) if max_matvecs is None else check_positive_int(max_matvecs, "max_matvecs")
    if frame is None:
        start = torch.randn((M, d, k + p), generator=generator, dtype=x_init.dtype).to(x_init.device)
    else:
        if frame.ndim != 3 or frame.shape[:2] != (M, d) or frame.shape[2] < k:
            raise PifsError(f"frame must have shape ({M}, {d}, b) with b >= k = {k}, got {tuple(frame.shape)}")
        start = frame.to(x_init.dtype)
        p = start.shape[2] - k
    out = _krylov(step, N, flats, shape, k, p, tol, max_matvecs, start, chunk_size, progress, deflate)
    ex, bound = out["ex"], out["bound"]
    # rounding floor: each of the N steps is applied with relative error ~eps, a perturbation of
    # size ~N eps sigma_1 of the product, i.e. N eps exp(Lambda_1 - Lambda_i) relative on sigma_i
    eps = float(torch.finfo(x_init.dtype).eps)
    with np.errstate(over="ignore", invalid="ignore"):
        floor = N * eps * np.exp(np.clip(ex[:, :1] - ex, 0.0, 700.0))
    bound = bound + np.where(np.isfinite(ex), floor, np.inf)
    per, per_bound = ex[:, :k].copy(), bound[:, :k].copy()
    mean, mean_bound = per.mean(axis=0), per_bound.mean(axis=0)
    rel = per_bound / np.maximum(1.0, np.abs(per))
    conv = rel.max(axis=0) <= tol
    clusters = _clusters(ex.mean(axis=0), bound.mean(axis=0), 1e-6)
    nxt = ex[:, k].mean() if ex.shape[1] > k else None
    cut = any(a <= k < b for a, b in clusters if ex.shape[1] > k) if nxt is not None else False
    meta = {"method": "krylov", "n_steps": N, "tol": tol, "oversample": int(p), "block": int(k + p),
            "basis_size": out["basis"], "matvecs": out["matvecs"], "jvps": out["fwd"] * N,
            "vjps": (out["matvecs"] - out["fwd"]) * N, "converged": bool(conv.all()),
            "error_bound": mean_bound.tolist(), "exponent_converged": conv.tolist(),
            "clusters": [c for c in clusters if c[0] <= k], "cut_in_cluster": bool(cut),
            "next_exponent": None if nxt is None else float(nxt), "bound_history": out["history"]}
    return NumericalLyapunov(per, d, None, meta, per_bound)


def lyapunov_full_jacobian(step: StepFn, n_steps: int, x_init: torch.Tensor, *,
                           frame: torch.Tensor | None = None, generator: torch.Generator | None = None,
                           chunk_size: int | None = None) -> NumericalLyapunov:
    """Textbook Benettin: the full d x d Jacobian per step (``jacrev``, d VJPs) and a d x d QR (the benchmark's
    baseline; with the same initial frame its first k exponents equal the top-k method's)."""
    N = check_positive_int(n_steps, "n_steps")
    M = x_init.shape[0]
    d = int(np.prod(x_init.shape[1:]))
    xs = chain_trajectory(step, N, x_init.detach())
    Q = random_frame(M, d, d, x_init.dtype, x_init.device, generator) if frame is None else frame.to(x_init.dtype).clone()
    total = torch.zeros((M, d), dtype=torch.float64, device=x_init.device)
    for i in range(N):
        for m in range(M):
            J = full_jacobian(lambda v, i=i: step(v, i), xs[i][m], "reverse", chunk_size)
            Q[m], R = torch.linalg.qr(J @ Q[m])
            total[m] += torch.diagonal(R).abs().double().log()
    per = np.sort(total.cpu().numpy(), axis=1)[:, ::-1].copy()
    return NumericalLyapunov(per, d, None, {"method": "benettin-full-jacobian", "n_steps": N})
