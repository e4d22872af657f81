"""Mixture metrics of ``bench sampling``, old (per-replicate loops) against new (vectorised), side by side.

For one configuration of the benchmark -- sliced W2 with its bootstrap CI, unbiased MMD^2, mode
coverage, and the paired sliced-W2 difference to the reference schedule -- times the frozen
pre-vectorisation code (benchmarks/_metrics_v0.py) and pifskit.metrics on the same samples, checks
that both give the same numbers, and prints the ratio.

    .venv/bin/python benchmarks/bench_metrics.py [--samples 10000 2000] [--n-boot 100] [--projections 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _metrics_v0 as old  # noqa: E402

from pifskit import metrics as new  # noqa: E402
from pifskit.exact_models import fit_mixture_per_class  # noqa: E402
from pifskit.datasets import load_digits  # noqa: E402
from pifskit.exact_models.fit import DIGITS_JITTER  # noqa: E402


def run_old(model, X, Xb, ref, L, B, seed):
    sw = old.sliced_w2(X, ref, L, B, np.random.default_rng([seed, 3]))
    mmd = old.mmd2_unbiased(X, ref, max_n=1000, n_boot=B, rng=np.random.default_rng([seed, 4]))
    tv, _ = old.mode_coverage(model, X, B, np.random.default_rng([seed, 5]))
    pd = old.sliced_w2_difference(X, Xb, ref, L, B, np.random.default_rng([seed, 3]))
    return [sw, mmd, tv, pd]


def run_new(model, X, ref, sw_ref, seed, reps_b):
    B = sw_ref.counts.shape[0]
    est, reps = sw_ref.compare(X)
    sw = new.MetricValue(est, *new.ci_from_replicates(est, reps))
    mmd = new.mmd2_unbiased(X, ref, max_n=1000, n_boot=B, rng=np.random.default_rng([seed, 4]))
    tv, _ = new.mode_coverage(model, X, B, np.random.default_rng([seed, 5]))
    pd = new.paired_difference((est, reps), reps_b)
    return [sw, mmd, tv, pd]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, nargs="+", default=[10000, 1000])
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--projections", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2, help="configurations timed per side")
    a = p.parse_args()
    X0, y = load_digits().rows()
    model = fit_mixture_per_class(X0, y, jitter=DIGITS_JITTER)
    seed = 0
    print(f"gmm:digits (d = {model.d}), {a.projections} projections, {a.n_boot} bootstrap replicates; "
          "per configuration: SW2 + CI, MMD^2 + CI, mode TV + CI, paired SW2 difference + CI")
    for n in a.samples:
        ref = model.sample(n, np.random.default_rng([seed, 1]))
        Xs = [model.sample(n, np.random.default_rng([seed, 10 + i])) + 0.05 * i for i in range(a.repeat + 1)]
        t0 = time.perf_counter()
        outs_old = [run_old(model, Xs[i], Xs[-1], ref, a.projections, a.n_boot, seed) for i in range(a.repeat)]
        t_old = (time.perf_counter() - t0) / a.repeat
        t0 = time.perf_counter()
        sw_ref = new.SlicedW2Reference(ref, a.projections, a.n_boot, np.random.default_rng([seed, 3]))
        reps_b = sw_ref.compare(Xs[-1])  # the reference schedule's samples: scored once per (sampler, steps)
        t_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs_new = [run_new(model, Xs[i], ref, sw_ref, seed, reps_b) for i in range(a.repeat)]
        t_new = (time.perf_counter() - t0) / a.repeat
        err = max(abs(getattr(o, f) - getattr(m, f)) / max(abs(getattr(o, f)), 1e-300)
                  for oo, nn in zip(outs_old, outs_new) for o, m in zip(oo, nn) for f in ("value", "ci_low", "ci_high"))
        print(f"n = {n:6d}: old {t_old:7.3f} s/config, new {t_new:7.3f} s/config (+ {t_prep:.3f} s once per run): "
              f"{t_old / t_new:5.1f}x faster; max relative difference of the 12 numbers {err:.1e}")


if __name__ == "__main__":
    main()
