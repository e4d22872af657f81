#!/usr/bin/env python3
"""Model-aware step designs (and GITS's levels from the same teacher) for several design seeds, as level files.

A model-aware design depends on its starts x_T (``seed``): comparing two methods on one seed compares two
realisations. This writes, per seed s, ``OUT/{solver}-model-s{s}.json`` and ``OUT/{solver}-gits-s{s}.json``
(``{"sigmas": [...], "solver": ...}``, the ``--levels`` format of ``experiments/bench_trained_steps.py``) and
``OUT/{solver}-design-s{s}.json`` (the design's errors, held-out check, calls and seconds); then score them:

    python experiments/design_seeds.py --checkpoint runs/unet16 --out runs/dseeds --solver ddim --steps 10 --seeds 0-5
    python experiments/bench_trained_steps.py --checkpoint runs/unet16 --classifier runs/classifier \\
        --data mnist:$MNIST --out runs/bench_dseeds --nfe 10 --solvers ddim --seeds 3 --n 1000 \\
        --levels gits-s0=runs/dseeds/ddim-gits-s0.json --levels model-s0=runs/dseeds/ddim-model-s0.json ... \\
        --schedules gits-s0,model-s0,... --reference model-s0
    python experiments/design_seeds.py --analyse runs/bench_dseeds

``--analyse DIR``: per design seed the paired Frechet difference model - gits averaged over the sampling seeds,
then the mean over design seeds with a 95 % t-interval (the design seed is the unit), and the pooled pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _seeds(spec: str) -> list[int]:
    lo, sep, hi = spec.partition("-")
    return list(range(int(lo), int(hi) + 1)) if sep else [int(v) for v in spec.split(",")]


def design(args: argparse.Namespace) -> None:
    import torch

    from pifskit.design.baselines import baseline_levels, design_range
    from pifskit.torch.model_spectrum import load_model_entry
    from pifskit.torch.trajectory_steps import trajectory_steps_for_entry

    torch.set_num_threads(args.threads)
    me = load_model_entry(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in _seeds(args.seeds):
        t0 = time.perf_counter()
        r = trajectory_steps_for_entry(me, design_range(me.schedule), args.steps, solver=args.solver,
                                       baselines=baseline_levels(me.schedule, args.steps), seed=s)
        rec = {"seed": s, "sigmas": r.sigmas.tolist(), "gits_sigmas": r.info["gits_sigmas"],
               "error": r.global_error, "start_schedule": r.info["start_schedule"], "held_out": r.info["held_out"],
               "model_calls": r.model_calls, "seconds": time.perf_counter() - t0,
               "vs_best_other": r.info["vs_best_other"]}
        for name, key in (("model", "sigmas"), ("gits", "gits_sigmas")):
            (out / f"{args.solver}-{name}-s{s}.json").write_text(json.dumps({"sigmas": rec[key],
                                                                              "solver": args.solver}))
        (out / f"{args.solver}-design-s{s}.json").write_text(json.dumps(rec, indent=1))
        print(f"seed {s}: last levels {np.round(r.sigmas[-4:-1], 4).tolist()} (GITS "
              f"{np.round(rec['gits_sigmas'][-4:-1], 4).tolist()}), from {rec['start_schedule']}, "
              f"{rec['seconds']:.0f} s", flush=True)


def analyse(folder: str) -> None:
    from bench_trained_steps import paired  # the bench's paired t-interval (experiments/ is the script's path)

    cells = json.loads((Path(folder) / "results.json").read_text())["cells"].values()
    fd = {(c["schedule"], c["seed"]): c["fd"] for c in cells}
    sampling = sorted({k for _, k in fd})
    model, gits = [], []  # per design seed: the Frechet values of both lists over the sampling seeds
    for s in sorted({int(n.rsplit("-s", 1)[1]) for n, _ in fd if n.startswith("model-s")}):
        if not all((f"model-s{s}", k) in fd and (f"gits-s{s}", k) in fd for k in sampling):
            continue
        model.append([fd[(f"model-s{s}", k)] for k in sampling])
        gits.append([fd[(f"gits-s{s}", k)] for k in sampling])
        d = paired(model[-1], gits[-1])
        print(f"design seed {s}: model - gits {np.round(d['per_seed'], 3).tolist()} mean {d['mean']:+.3f}")
    per_design = paired(np.mean(model, axis=1), np.mean(gits, axis=1))  # the mean of differences per design seed
    print(f"over {len(model)} design seeds: {per_design['mean']:+.3f} +- {per_design['ci95']:.3f} (95 % t); model "
          f"lower in {sum(v < 0 for v in per_design['per_seed'])} of {len(model)}")
    pooled = paired(np.ravel(model), np.ravel(gits))
    print(f"pooled {len(pooled['per_seed'])} pairs (ignores the clustering by design seed): "
          f"{pooled['mean']:+.3f} +- {pooled['ci95']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="pifskit train run directory or checkpoint file")
    p.add_argument("--out", help="folder for the level files")
    p.add_argument("--solver", default="ddim")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", default="0-5", help="design seeds: 'A-B' or a comma list")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--analyse", metavar="DIR", help="summarise a bench_trained_steps.py output folder instead")
    args = p.parse_args()
    if args.analyse:
        analyse(args.analyse)
    elif args.checkpoint and args.out:
        design(args)
    else:
        p.error("give --checkpoint and --out (designs) or --analyse DIR")


if __name__ == "__main__":
    main()
