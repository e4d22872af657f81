"""Core geometry benchmark: vectorised pifskit vs a naive per-step Python reference, measured side by side.

Workload (issue 2): full geometry of a 1000-step chain on a 4096-point lambda grid
(c, d, L*, lambda*, f_t(lambda), Lambda(lambda), lambda**) plus the analytic
Lyapunov spectrum and Kaplan-Yorke dimension of a 64x64x3 power-law spectrum.

    python benchmarks/bench_core.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pifskit import get_schedule, make_chain
from pifskit.geometry import (
    contraction_threshold,
    expansion_function,
    expansion_threshold,
    global_threshold,
    lambda_grid,
    step_coefficients,
)
from pifskit.lyapunov import kaplan_yorke, lyapunov_exponents
from pifskit.spectra import powerlaw


def vectorised(chain, grid, spectrum):
    c, d = step_coefficients(chain)
    L = contraction_threshold(chain)
    lam_star = expansion_threshold(chain)
    f = expansion_function(chain, grid)
    Lam = np.log(f).sum(axis=0)  # f itself is part of the output (the report's f-map)
    lam2 = global_threshold(chain)
    ex = lyapunov_exponents(chain, spectrum)
    return L, lam_star, Lam, lam2, kaplan_yorke(ex)


def naive(chain, grid, spectrum):
    """Per-step Python loop with the textbook formulas (numpy only across lambda within a step)."""
    ab = chain.alpha_bar.tolist()
    L, lam_star = [], []
    Lam = np.zeros_like(grid)
    ex = np.zeros(spectrum.d)
    ev = spectrum.eigenvalues
    steps = []
    for i in range(chain.n_steps):
        at, as_ = math.sqrt(ab[i]), math.sqrt(ab[i + 1])
        st, ss = math.sqrt(1 - ab[i]), math.sqrt(1 - ab[i + 1])
        c = ss / st
        d = as_ - at * ss / st
        L.append((1 - c) / d)
        lam_star.append(st * (st - ss) / (at * (as_ - at)) if at > 0 else math.inf)
        Lam += np.log((as_ * at * grid + ss * st) / (at**2 * grid + st**2))
        ex += np.log((as_ * at * ev + ss * st) / (at**2 * ev + st**2))
        steps.append((at, as_, st, ss))

    def total(lam):
        return sum(math.log((a2 * a1 * lam + s2 * s1) / (a1**2 * lam + s1**2)) for a1, a2, s1, s2 in steps)

    lo, hi = -30.0, 30.0
    for _ in range(60):  # bisection in log lambda
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(math.exp(mid)) < 0 else (lo, mid)
    lam2 = math.exp(0.5 * (lo + hi))
    ex = np.sort(ex)[::-1]
    S, k = 0.0, 0
    for k, e in enumerate(ex):
        if S + e < 0:
            break
        S += e
    ky = k + S / abs(ex[k])
    return np.array(L), np.array(lam_star), Lam, lam2, ky


def best_time(fn, *args, repeat=5):
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    chain = make_chain(get_schedule("sd"), 1000, "trailing")
    grid = lambda_grid(4096)
    spectrum = powerlaw(64, 3, 2.0, 0.205)
    t_vec, out_vec = best_time(vectorised, chain, grid, spectrum, repeat=args.repeat)
    t_naive, out_naive = best_time(naive, chain, grid, spectrum, repeat=max(1, args.repeat // 2))
    # both compute the same numbers
    np.testing.assert_allclose(out_vec[0], out_naive[0], rtol=1e-6)
    np.testing.assert_allclose(out_vec[2], out_naive[2], rtol=1e-6, atol=1e-9)
    assert abs(out_vec[3] - out_naive[3]) < 1e-6 * out_vec[3]
    assert abs(out_vec[4] - out_naive[4]) < 1e-6 * out_vec[4]
    print(f"workload: {chain.n_steps}-step chain x {grid.size}-point lambda grid + {spectrum.d}-eigenvalue spectrum")
    print(f"lambda** = {out_vec[3]:.6f}   KY dimension = {out_vec[4]:.3f}")
    print(f"{'implementation':<28}{'best of runs (ms)':>20}")
    print(f"{'pifskit (vectorised)':<28}{1e3 * t_vec:>20.1f}")
    print(f"{'naive per-step Python':<28}{1e3 * t_naive:>20.1f}")
    print(f"speed ratio naive / pifskit: {t_naive / t_vec:.1f}x   (target: pifskit < 100 ms)")


if __name__ == "__main__":
    main()
