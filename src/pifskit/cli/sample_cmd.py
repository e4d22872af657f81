"""``pifskit sample``: DDIM samples of a trained checkpoint over any pifskit chain -> PNG grid + .npz."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .._json import to_jsonable
from .._validate import PifsError
from ..resolve import resolve_chain
from ..schedules import DiscreteSchedule, get_schedule
from ._common import add_json_option, dump_json, number_list, print_notices

#: |sample| above this (data in [-1, 1]) draws a one-line warning on stderr
RANGE_WARN = 1.5


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample a trained checkpoint with DDIM over a pifskit chain",
                              description="Deterministic DDIM (eta = 0) from a `pifskit train` checkpoint over a "
                                          "chain of its training schedule; writes OUT/samples.png and "
                                          "OUT/samples.npz (and OUT/quality.json with --classifier).")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    p.add_argument("--steps", type=int, default=50, help="number of DDIM steps (default 50)")
    p.add_argument("--spacing", default="trailing",
                   help="trailing (default), leading, linspace, uniform, logsnr, karras, ays-*")
    p.add_argument("--timesteps", type=number_list, default=None, metavar="LIST", help="explicit training timesteps, noisiest first")
    p.add_argument("--sigmas", type=number_list, default=None, metavar="LIST", help="explicit VE sigmas, noisiest first (0 = clean)")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True,
                   help="clamp the x0 estimate to the data range [-1, 1] at each step (default on: keeps any "
                        "checkpoint, eps-prediction from near pure noise included, from diverging; "
                        "--no-clip for the raw DDIM map)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classifier", metavar="DIR", default=None,
                   help="a `pifskit train-classifier` output: report the feature Frechet distance and "
                        "precision/recall against its held-out split, beside the real-vs-real floor")
    add_json_option(p)
    p.set_defaults(handler=run_sample)


def run_sample(args) -> int:
    from pathlib import Path

    from ..torch.checkpoint import load_checkpoint_model
    from ..torch.generate import ddim_sample, save_grid

    model, info = load_checkpoint_model(args.checkpoint, ema=not args.no_ema, device=args.device)
    schedule = get_schedule(info["schedule"])
    if not isinstance(schedule, DiscreteSchedule):  # continuous ones have num_train_timesteps too
        raise PifsError(f"checkpoint schedule {info['schedule']!r} is not discrete")
    chain = resolve_chain(schedule, args.steps, args.spacing, args.timesteps, args.sigmas)
    print_notices(chain)
    x = ddim_sample(model, info["prediction_type"], schedule, chain, args.n, info["image_shape"], seed=args.seed,
                    batch_size=args.batch_size, device=args.device, clip=args.clip)
    outside = float(np.mean(np.abs(x) > RANGE_WARN))
    if outside > 0:
        print(f"warning: {outside:.1%} of sample values lie outside [-{RANGE_WARN:g}, {RANGE_WARN:g}] (data range "
              f"[-1, 1]; max |x| {float(np.abs(x).max()):.3g}): the model or chain diverged"
              f"{'; try --clip' if not args.clip else ''}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = save_grid(x, out / "samples.png")
    meta = {"checkpoint": info["path"], "step": info["step"], "ema": info["ema"], "seed": args.seed,
            "clip": args.clip, "chain": chain.to_dict(), "prediction_type": info["prediction_type"],
            "schedule": info["schedule"]}
    np.savez_compressed(out / "samples.npz", samples=x, meta=json.dumps(to_jsonable(meta)))
    result = {"png": str(png), "npz": str(out / "samples.npz"), "n": int(len(x)), "n_steps": chain.n_steps,
              "chain": chain.name, "step": info["step"],
              "mean": float(x.mean()), "std": float(x.std())}
    if args.classifier:
        from ..torch.quality import quality_report

        q = quality_report(args.classifier, x, seed=args.seed)
        (out / "quality.json").write_text(json.dumps(to_jsonable(q), indent=1))
        result["quality"] = q
    if args.json:
        dump_json(result)
    else:
        print(f"{result['n']} samples ({chain.n_steps} steps, {chain.name}) -> {png}, {result['npz']}")
        if args.classifier:
            q = result["quality"]
            print(f"classifier-feature Frechet distance {q['frechet_distance']:.3f} (real-vs-real floor "
                  f"{q['floor']['frechet_distance']:.3f} at n={q['floor']['n']}); precision {q['precision']:.3f} "
                  f"recall {q['recall']:.3f} (floor {q['floor']['precision']:.3f} / {q['floor']['recall']:.3f})")
    return 0
