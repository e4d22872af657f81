"""``pifskit design steps --model ENTRY`` (default ``--model-method trajectory``): the model's own trajectories."""

from __future__ import annotations

import argparse

import numpy as np

from .._json import dump_json
from .._validate import PifsError
from ..design.baselines import baseline_levels, design_range, starts_from_noise
from ..design.steps import timesteps_from_sigmas
from ..design.trajectory import TRAJECTORY_METRICS, TRAJECTORY_SOLVERS, default_refine
from ..scheduler_config import config_levels
from ..schedules import DiscreteSchedule, RectifiedFlowSchedule, flow_t_from_sigma
from ._common import progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-method", default="trajectory", choices=["trajectory", "spectrum"],
                   help="--model: 'trajectory' (default) picks the levels from the model's own ODE trajectories "
                        "(the solver's local error on a teacher grid, dynamic programming, then global-error "
                        "refinement); 'spectrum' designs against the model's per-level Jacobian spectrum")
    p.add_argument("--trajectory-starts", type=int, default=32, help="--model trajectory: starts x_T (default 32)")
    p.add_argument("--trajectory-grid", type=int, default=80,
                   help="--model trajectory: teacher levels, uniform in log sigma (default 80)")
    p.add_argument("--trajectory-refine", type=int, default=None,
                   help="--model trajectory: global-error evaluations of the refinement (default: 40 up to 10 "
                        "NFE, then ceil(400 / NFE), about 400 model calls; 0: none)")
    p.add_argument("--trajectory-validation", type=int, default=16,
                   help="--model trajectory: held-out starts the refined levels must also improve on, else the "
                        "search's start is kept (default 16; 0: no check)")
    p.add_argument("--trajectory-metric", default="w2", choices=list(TRAJECTORY_METRICS),
                   help="--model trajectory: the global error the levels minimise: 'w2' (default) the Gaussian W2 "
                        "of the output law to the teacher's in its principal axes, 'rms' the per-sample distance "
                        "to the teacher's endpoint")


METRIC_DEFINITIONS = {
    "w2": "Gaussian W2 per coordinate between the laws of x_0(levels) and x_0(teacher) over the starts, in the "
          "teacher outputs' principal axes (the real solver and model)",
    "rms": "mean over the starts of RMS(x_0(levels) - x_0(teacher)), the real solver and model"}


def run(args: argparse.Namespace, sched, cfg: dict) -> int:
    try:
        from ..torch.model_spectrum import load_model_entry
        from ..torch.trajectory_steps import trajectory_steps_for_entry
    except ImportError as exc:
        raise PifsError(f"--model needs torch (pip install 'pifskit[torch]'): {exc}") from None
    me = load_model_entry(args.model)
    if me.schedule is not None:
        sched, cfg = me.schedule, {}
    if args.solver not in TRAJECTORY_SOLVERS:
        raise PifsError(f"--model-method trajectory supports --solver {', '.join(TRAJECTORY_SOLVERS)}; "
                        f"got {args.solver!r}")
    N = args.steps
    baselines = {**baseline_levels(sched, N), **config_levels(sched, cfg, N)}
    # an upper bound for the bar: the teacher, then per evaluated list (baselines, DP, GITS, the search, the
    # held-out pair, one spare) at most 2N calls (Heun) or N
    refine = default_refine(args.solver, N) if args.trajectory_refine is None else args.trajectory_refine
    if refine < 0:
        raise PifsError(f"--trajectory-refine must be >= 0, got {refine}")
    lists = len(baselines) + 2 + refine + 2 + 1
    n_calls = args.trajectory_grid + lists * (2 * N if args.solver == "heun" else N)
    with progress("model trajectories", n_calls, enabled=not args.json) as advance:
        r = trajectory_steps_for_entry(me, design_range(sched), N, solver=args.solver, baselines=baselines,
                                       n_starts=args.trajectory_starts, grid_size=args.trajectory_grid,
                                       refine=refine, validation=args.trajectory_validation,
                                       metric=args.trajectory_metric,
                                       pure_noise=starts_from_noise(sched),
                                       progress=advance)
        advance(max(n_calls - r.model_calls, 0))  # the bar's total is an upper bound
    sig = r.sigmas
    errs = r.info["baseline_errors"]
    baselines["gits"] = r.info["gits_sigmas"]
    out = {"criterion": "steps", "schedule": getattr(sched, "name", type(sched).__name__), "model": args.model,
           "model_method": "trajectory", "steps": N, "solver": r.solver, "start": "prior",
           "landing": "N noisy levels, then the solver's own last step to sigma = 0 (every baseline alike)",
           "metric": "trajectory", "trajectory_metric": args.trajectory_metric,
           "metric_definition": METRIC_DEFINITIONS[args.trajectory_metric],
           "sigmas": sig.tolist(), "error": r.global_error, "w2": r.global_error,
           "timesteps": (timesteps_from_sigmas(sched, sig[:-1]).tolist() if isinstance(sched, DiscreteSchedule)
                         and np.isfinite(sig[:-1]).all() else None),
           "flow_sigmas": flow_t_from_sigma(sig[:-1]).tolist() if isinstance(sched, RectifiedFlowSchedule) else None,
           "dp_sigmas": r.dp_sigmas.tolist(), "dp_error": r.dp_global_error, "local_error": r.local_error,
           "rms": r.info["rms"], "error_ci": r.info["error_ci"], "vs_best_other": r.info["vs_best_other"],
           "baselines": {k: {"sigmas": np.asarray(v, float).tolist(), "error": errs.get(k), "w2": errs.get(k),
                             "rms": r.info["baseline_rms"].get(k)} for k, v in baselines.items()},
           "model_calls": r.model_calls, "seconds": r.seconds, "trajectory": r.info}
    if args.json:
        dump_json(out)
        return 0
    print(f"model-aware {N}-step chain for {me.name}, solver {r.solver} ({r.model_calls} model calls, "
          f"{r.seconds:.1f} s; {r.info['teacher']}):")
    print("  sigmas    " + ", ".join(f"{s:.4g}" for s in sig))
    if out["timesteps"] is not None:
        print("  timesteps " + ", ".join(str(int(t)) for t in out["timesteps"]))
    if out["flow_sigmas"] is not None:
        print("  flow sigmas (t') " + ", ".join(f"{s:.4g}" for s in out["flow_sigmas"]))
    lo, hi = r.info["error_ci"]
    print(f"  trajectory error ({args.trajectory_metric}) {r.global_error:.4f} [{lo:.4f}, {hi:.4f}] (DP levels "
          f"{r.dp_global_error:.4f}; search of {r.info['refine']} evaluations from {r.info['start_schedule']}; "
          f"paired RMS {r.info['rms']:.4f})")
    vs = r.info["vs_best_other"]
    if vs["rival"] is not None and vs.get("difference_ci") is not None:
        print(f"  minus the best other list ({vs['rival']}): {vs['difference']:+.4f} "
              f"[{vs['difference_ci'][0]:+.4f}, {vs['difference_ci'][1]:+.4f}] (paired bootstrap over the design "
              "starts, on which the search chose: optimistic)")
    if r.info["held_out"]:
        h = r.info["held_out"]
        print(f"  held-out check ({h['starts']} starts): refined {h['refined']:.4f} vs its start {h['start']:.4f} "
              f"-> {'refined levels kept' if h['kept'] else 'start kept (the refinement did not generalise)'}")
    print(f"  {'baseline':<16} {'error':>9} {'paired RMS':>11}")
    for name, e in sorted(errs.items(), key=lambda kv: kv[1]):
        print(f"  {name:<16} {e:>9.4f} {r.info['baseline_rms'][name]:>11.4f}")
    return 0
