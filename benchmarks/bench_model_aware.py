"""Model-aware vs model-free step design on an exact mixture bench (paired sliced W2, several seeds).

For each solver and step count N, three level sets on the bench's training schedule (SD 1.x, sigma
0.029 .. 14.6, x_T ~ N(0, I) at the first level):

* ``ays-sd15``  -- the published Align Your Steps list;
* ``free``      -- pifskit's solver-specific design for the data's pooled PCA spectrum (model-free);
* ``aware``     -- pifskit's design against the mixture's own per-level Jacobian spectrum
                   (``pifskit design steps --model gmm:...``; :mod:`pifskit.torch.model_spectrum`).

Every set is sampled with pifskit's numpy samplers and the exact mixture denoiser from the same x_T
(common random numbers) for each seed; sliced W2 against fresh data, with the projections and bootstrap
resamples shared by the three, so differences are paired. Seeds are pooled: the difference is the mean
over seeds, its interval from the mean of the seeds' paired bootstrap replicates (independent seeds).

    python benchmarks/bench_model_aware.py --data gmm:digits [--samples 10000 --seeds 3 --n-boot 100]
    python benchmarks/bench_model_aware.py --data gmm:mnist:DIR   # MNIST IDX folder, PCA 64

Prints one row per (solver, N): SW2 of each set and the paired differences aware - ays, aware - free,
free - ays with 95 % intervals ("win" = interval below 0, "tie" = contains 0, "loss" = above 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pifskit.exact_bench import parse_bench_data  # noqa: E402
from pifskit.chains import make_chain  # noqa: E402
from pifskit.design.steps import optimal_steps  # noqa: E402
from pifskit.metrics import SlicedW2Reference, ci_from_replicates  # noqa: E402
from pifskit.samplers import parse_sampler  # noqa: E402
from pifskit.schedules import get_schedule  # noqa: E402


def verdict(lo: float, hi: float) -> str:
    return "win" if hi < 0 else ("loss" if lo > 0 else "tie")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="gmm:digits")
    ap.add_argument("--samplers", default="ddim,euler,heun,dpmpp2m")
    ap.add_argument("--steps", default="5,10,20")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--projections", type=int, default=128)
    ap.add_argument("--model-states", type=int, default=8)
    ap.add_argument("--model-levels", type=int, default=8)
    ap.add_argument("--model-refine", type=int, default=4)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--regression", action="store_true",
                    help="also run 'aware-reg': the model-aware design with regression gains (forwards only)")
    ap.add_argument("--sw2-design", action="store_true",
                    help="also run 'sw2': the library's sliced-W2 design (optimal_steps(..., metric='sw2'))")
    args = ap.parse_args(argv)

    from pifskit.design.baselines import design_range
    from pifskit.torch.model_spectrum import level_spectra_for_entry, load_model_entry

    sched = get_schedule("sd")
    data = parse_bench_data(args.data)
    model = data.model
    t0 = time.perf_counter()
    me = load_model_entry(args.data)
    ls = level_spectra_for_entry(me, design_range(sched), n_levels=args.model_levels, refine=args.model_refine,
                                 n_states=args.model_states)
    t_est = time.perf_counter() - t0
    ls_reg = level_spectra_for_entry(me, design_range(sched), n_levels=args.model_levels, refine=args.model_refine,
                                     n_states=args.model_states, gains="regression") if args.regression else None
    print(f"# {data.name}: level spectra in {t_est:.1f} s, {ls.info['model_calls']} model calls (JVPs), "
          f"levels {', '.join(f'{s:.3g}' for s in ls.sigmas)}", flush=True)

    samplers = [parse_sampler(s) for s in args.samplers.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    chains, design_s = {}, {"free": 0.0, "aware": 0.0}
    for label, _, _ in samplers:
        for N in steps:
            chains[(label, N, "ays-sd15")] = make_chain(sched, N, "ays-sd15")
            t = time.perf_counter()
            chains[(label, N, "free")] = optimal_steps(sched, data.spectrum, N, solver=label).chain
            design_s["free"] += time.perf_counter() - t
            t = time.perf_counter()
            chains[(label, N, "aware")] = optimal_steps(sched, ls, N, solver=label).chain
            design_s["aware"] += time.perf_counter() - t
            if ls_reg is not None:
                chains[(label, N, "aware-reg")] = optimal_steps(sched, ls_reg, N, solver=label).chain
            if args.sw2_design:
                chains[(label, N, "sw2")] = optimal_steps(sched, data.spectrum, N, solver=label, metric="sw2").chain
    print(f"# optimiser seconds (all cells): free {design_s['free']:.1f}, aware {design_s['aware']:.1f}", flush=True)

    names = ("ays-sd15", "free", "aware") + (("aware-reg",) if ls_reg else ()) + (("sw2",) if args.sw2_design else ())
    pairs = (("aware", "ays-sd15"), ("aware", "free"), ("free", "ays-sd15")) + (
        (("aware-reg", "ays-sd15"), ("aware-reg", "free")) if ls_reg else ()) + (
        (("sw2", "ays-sd15"), ("sw2", "free")) if args.sw2_design else ())
    res: dict = {}
    for seed in range(args.seeds):
        n, d = args.samples, model.d
        x_T = np.random.default_rng([seed, 0]).standard_normal((n, d))
        ref = model.sample(n, np.random.default_rng([seed, 1]))
        sw = SlicedW2Reference(ref, args.projections, args.n_boot, np.random.default_rng([seed, 3]))
        for label, fn, opts in samplers:
            for N in steps:
                for name in names:
                    X = fn(model.denoise, x_T, chains[(label, N, name)], rng=np.random.default_rng([seed, 6]), **opts)
                    res.setdefault((label, N, name), []).append(sw.compare(X))
        print(f"# seed {seed} done", file=sys.stderr, flush=True)

    rows = []
    hdr = (f"{'solver':<8} {'N':>3} " + " ".join(f"{n:>9}" for n in names) + "   "
           + "   ".join(f"{a}-{b:<10}" + " " * 22 for a, b in pairs))
    print(hdr)
    for label, _, _ in samplers:
        for N in steps:
            est = {k: np.mean([e for e, _ in res[(label, N, k)]]) for k in names}
            line = f"{label:<8} {N:>3} " + " ".join(f"{est[k]:>9.4f}" for k in names) + "   "
            row = {"solver": label, "steps": N, **{f"sw2_{k}": float(est[k]) for k in names},
                   "sigmas": {k: chains[(label, N, k)].sigmas.tolist() for k in names}}
            cells = []
            for a, b in pairs:
                diffs = [ea - eb for (ea, _), (eb, _) in zip(res[(label, N, a)], res[(label, N, b)])]
                reps = np.mean([ra - rb for (_, ra), (_, rb) in zip(res[(label, N, a)], res[(label, N, b)])], axis=0)
                e = float(np.mean(diffs))
                lo, hi = ci_from_replicates(e, reps)
                cells.append(f"{e:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict(lo, hi):<4}")
                row[f"{a}_minus_{b}"] = {"value": e, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi)}
            print(line + "   ".join(cells), flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"data": args.data, "level_spectra": ls.to_dict(), "seconds_estimate": t_est,
                       "settings": vars(args), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
