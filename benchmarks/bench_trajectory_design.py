"""Cost of the model-aware step design (``pifskit design steps --model ENTRY``, method trajectory).

For each solver and N: the sampler's NFE on the result, wall seconds (and per NFE: the cost grows with it) and model
calls (batched, ``--trajectory-starts`` rows each) of
:func:`pifskit.torch.trajectory_steps.trajectory_steps_for_entry` with the CLI's defaults, the teacher's
share, and the trajectory error of the result (its default metric: the principal-axes W2 to the teacher's
law) beside the best baseline's. Printed beside the published
costs of the alternatives: DMN (model-free, ~15 s), GITS (a teacher + DP, cheap), AYS (6-96 GPU-hours).

    python benchmarks/bench_trajectory_design.py ENTRY [--solvers ddim,dpmpp2m] [--steps 5,10,20] [--threads 2]

ENTRY: a pifskit checkpoint (run folder or file) or gmm:digits / gmm:mnist:DIR.
"""

from __future__ import annotations

import argparse
import time

import torch

from pifskit.chains import Chain
from pifskit.design.baselines import baseline_levels, design_range
from pifskit.samplers import sampler_nfe
from pifskit.torch.model_spectrum import load_model_entry
from pifskit.torch.trajectory_steps import trajectory_steps_for_entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("entry")
    p.add_argument("--schedule", default="sd", help="schedule for gmm: entries (a checkpoint brings its own)")
    p.add_argument("--solvers", default="ddim,dpmpp2m")
    p.add_argument("--steps", default="5,10,20")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    me = load_model_entry(args.entry)
    if me.schedule is not None:
        sched = me.schedule
    else:
        from pifskit.schedules import get_schedule

        sched = get_schedule(args.schedule)
    print(f"model: {me.name}, d = {me.d}, {args.threads} torch threads")
    print(f"{'solver':8} {'N':>3} {'NFE':>4} {'seconds':>8} {'s/NFE':>6} {'calls':>6} {'error':>8} "
          f"{'best baseline':>22}")
    for solver in args.solvers.split(","):
        for N in (int(n) for n in args.steps.split(",")):
            t0 = time.perf_counter()
            r = trajectory_steps_for_entry(me, design_range(sched), N, solver=solver,
                                           baselines=baseline_levels(sched, N))
            dt = time.perf_counter() - t0
            name, err = min(r.info["baseline_errors"].items(), key=lambda kv: kv[1])
            nfe = sampler_nfe(solver, Chain.from_sigmas(r.sigmas))
            print(f"{solver:8} {N:>3} {nfe:>4} {dt:>8.1f} {dt / nfe:>6.2f} {r.model_calls:>6} {r.global_error:>8.4f} "
                  f"{name:>13} {err:>8.4f}")
    print("published: DMN ~15 s (model-free, its paper); GITS: teacher + DP, seconds; AYS: 6-96 GPU-hours per model")


if __name__ == "__main__":
    main()
