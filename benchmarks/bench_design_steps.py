"""Time the W2 step optimiser beside the baselines' construction + W2 evaluation, in one run.

    python benchmarks/bench_design_steps.py [--repeats 5]

Spectrum: 64x64x4 power-law latent (|k|^-1.5, unit variance; 16384 eigenvalues),
schedule: SD1.5 scaled_linear. A second spectrum with 16384 *distinct*
eigenvalues exercises the log-lambda binning. Prints median seconds and the
ratio optimiser / baselines. Note: on a loaded machine OpenBLAS threads can
inflate scipy's L-BFGS-B time; run with OPENBLAS_NUM_THREADS=1 for stable numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pifskit.design.steps import baseline_chains, optimal_steps, w2_surrogate
from pifskit.schedules import get_schedule
from pifskit.spectra import Spectrum, powerlaw


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sd = get_schedule("sd")
    rng = np.random.default_rng(0)
    spectra = {
        "powerlaw 64x64x4": powerlaw(64, 4, 1.5, 1.0),
        "16384 distinct": Spectrum(np.exp(rng.normal(-1.0, 2.0, 64 * 64 * 4)), name="lognormal"),
    }
    print(f"{'spectrum':<18} {'N':>4} {'optimiser s':>12} {'baselines s':>12} {'ratio':>7} {'iters':>6} "
          f"{'W2 opt':>9} {'best baseline':>22}")
    for name, sp in spectra.items():
        for N in (5, 10, 20, 50, 100):
            opt_t = _median_time(lambda sp=sp, N=N: optimal_steps(sd, sp, N), args.repeats)

            def baselines(sp=sp, N=N):
                return {k: w2_surrogate(c, sp) for k, c in baseline_chains(sd, N).items()}

            base_t = _median_time(baselines, args.repeats)
            r = optimal_steps(sd, sp, N)
            b = baselines()
            best = min(b, key=b.get)
            print(f"{name:<18} {N:>4} {opt_t:>12.4f} {base_t:>12.4f} {opt_t / base_t:>7.1f} {r.iterations:>6} "
                  f"{r.w2:>9.4f} {best + f' {b[best]:.4f}':>22}")


if __name__ == "__main__":
    main()
