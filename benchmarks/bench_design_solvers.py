"""Time the solver-aware step design (model-free), per solver and N, in one run.

    python benchmarks/bench_design_solvers.py [--repeats 3] [--schedules sd,sd3]

Spectrum: 64x64x4 power-law latent (|k|^-1.5, unit variance), binned to the solver criterion's 128 bins.
Each row: median seconds of ``optimal_steps(..., solver=S)`` -- optimiser, every baseline built and
scored under the same metric (DMN up to N = 20), integer timesteps (refined up to N = 20) -- the
optimum's W2, the best baseline and its W2, and the ratio best baseline / optimum. Run with
OPENBLAS_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pifskit.design.baselines import _dmn_cached
from pifskit.design.steps import optimal_steps
from pifskit.schedules import get_schedule
from pifskit.spectra import powerlaw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--schedules", default="sd,sd3")
    ap.add_argument("--solvers", default="ddim,heun,dpmpp2m,dpmpp3m,ipndm")
    ap.add_argument("--steps", default="5,10,20,50")
    args = ap.parse_args()
    sp = powerlaw(64, 4, 1.5, 1.0)
    print(f"{'schedule':<9} {'solver':<8} {'N':>3} {'seconds':>8} {'W2 opt':>9} {'best baseline':>16} {'W2':>9} {'ratio':>6}")
    for sname in args.schedules.split(","):
        sched = get_schedule(sname)
        for solver in args.solvers.split(","):
            for N in (int(n) for n in args.steps.split(",")):
                ts = []
                for _ in range(args.repeats):
                    _dmn_cached.cache_clear()  # time the DMN baseline too
                    t0 = time.perf_counter()
                    d = optimal_steps(sched, sp, N, solver=solver)
                    ts.append(time.perf_counter() - t0)
                name, b = min(d.baselines.items(), key=lambda kv: kv[1]["w2"])
                print(f"{sname:<9} {solver:<8} {N:>3} {statistics.median(ts):>8.3f} {d.w2:>9.4f} {name:>16} "
                      f"{b['w2']:>9.4f} {b['w2'] / max(d.w2, 1e-300):>6.2f}")


if __name__ == "__main__":
    main()
