"""``pifskit train`` (denoiser training, resumable) and ``pifskit train-classifier`` (quality features)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._validate import PifsError
from ..torch.config import DEFAULT_CKPT_MINUTES, TRAIN_PREDICTIONS, TrainConfig, cli_fields
from ._common import add_json_option, dump_json, progress


_MODEL_FLAGS = {"dit": ("width", "depth", "heads", "patch_size", "pos_emb"),
                "unet": ("base_channels", "num_res_blocks", "channel_mult", "attention")}


def _add_data_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required, metavar="SPEC",
                   help="digits | mnist:DIR[:train|test|all] | fashion-mnist:DIR | cifar10:DIR | folder:PATH[:RES]")
    g.add_argument("--holdout", type=float, default=None,
                   help="fraction held out by a fixed seeded split (default 0.1)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the train/held-out split (default 0)")
    g.add_argument("--no-verify", action="store_true", help="accept release files whose md5 differs")


def _data_spec(args, required: bool = True):
    from ..datasets import parse_data_spec

    if args.data is None:
        if required:
            raise PifsError("--data SPEC is required (e.g. --data digits or --data mnist:/path/to/mnist)")
        return None
    return parse_data_spec(args.data, 0.1 if args.holdout is None else args.holdout,
                           0 if args.split_seed is None else args.split_seed, verify=not args.no_verify)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a small DiT / U-Net denoiser (resumable; torchrun-ready)",
                              description="Train a denoiser; writes OUT/checkpoint.pt and OUT/log.jsonl. "
                                          "Under torchrun the same command trains with DDP.")
    _add_data_options(p)
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps (with --resume: the new total)")
    p.add_argument("--out", metavar="DIR", help="run directory (must not hold a checkpoint)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR to a total of --steps")
    _add_config_options(p.add_argument_group("hyper-parameters (recorded; a resume must not change them)"))
    m = p.add_argument_group("model size (defaults: DiT patch 4, width 96, depth 4, heads 4; U-Net 24 x (1,2,2))")
    m.add_argument("--width", type=int, default=None)
    m.add_argument("--depth", type=int, default=None)
    m.add_argument("--heads", type=int, default=None)
    m.add_argument("--patch-size", type=int, default=None)
    m.add_argument("--pos-emb", choices=("sincos", "learned"), default=None)
    m.add_argument("--base-channels", type=int, default=None)
    m.add_argument("--num-res-blocks", type=int, default=None)
    m.add_argument("--channel-mult", default=None, help="U-Net channel multipliers, e.g. 1,2,2")
    m.add_argument("--attention", action="store_const", const=True, default=None,
                   help="U-Net: self-attention at the lowest resolution")
    o = p.add_argument_group("run")
    o.add_argument("--ckpt-every", type=int, default=0,
                   help="also checkpoint every N steps (default 0: off)")
    o.add_argument("--ckpt-minutes", type=float, default=DEFAULT_CKPT_MINUTES,
                   help=f"checkpoint every M minutes of wall time (default {DEFAULT_CKPT_MINUTES:g}; 0: off); a "
                        "checkpoint is always written at the end and on Ctrl-C / SIGTERM (exit 130 / 143)")
    o.add_argument("--log-every", type=int, default=10, help="log a JSON line every N steps (default 10)")
    o.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    o.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_json_option(p)
    p.set_defaults(handler=run_train)

    c = subparsers.add_parser("train-classifier", help="train the small CNN whose features the quality metric uses",
                              description="Train a small CNN classifier on a labelled data set; writes "
                                          "OUT/classifier.pt and OUT/classifier.json (accuracy and the metric's "
                                          "real-vs-real floor). Its Frechet distance is NOT Inception FID.")
    _add_data_options(c, required=True)
    c.add_argument("--out", metavar="DIR", required=True)
    c.add_argument("--epochs", type=int, default=0,
                   help="passes over the training split (default 0: ~600 optimiser steps, 3 to 50 epochs)")
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=None)
    add_json_option(c)
    c.set_defaults(handler=run_train_classifier)


_TYPES = {"int": int, "float": float, "str": str}


def _add_config_options(g) -> None:
    """One flag per TrainConfig field: type, default (shown in the help; the parsed value stays None when not
    given, which a resume needs) and help all come from the dataclass, so the defaults live in one place."""
    for f in cli_fields():
        kw = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        typ = _TYPES[str(f.type)]
        if "choices" not in f.metadata:
            kw["metavar"] = {int: "N", float: "X", str: "NAME"}[typ]
        g.add_argument("--" + f.name.replace("_", "-"), type=typ, default=None,
                       help=f"{f.metadata['help']} (default {f.default})", **kw)


def _model_overrides(args, arch: str | None) -> dict:
    given = {}
    for a, flags in _MODEL_FLAGS.items():
        for f in flags:
            v = getattr(args, f)
            if v is None:
                continue
            if arch is not None and a != arch:
                raise PifsError(f"--{f.replace('_', '-')} is a {a} option, the model is {arch}")
            if f == "channel_mult":
                try:
                    v = [int(u) for u in v.split(",") if u]
                except ValueError:
                    raise PifsError(f"--channel-mult must be comma-separated integers, got {v!r}") from None
            given[f] = v
    return given


def run_train(args) -> int:
    import torch

    from ..parameterization import normalize_prediction
    from ..torch.train import TrainingInterrupted, check_out_dir, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.out) == bool(args.resume):
        raise PifsError("give exactly one of --out DIR (new run) or --resume DIR (continue a run)")
    given = {f.name: getattr(args, f.name) for f in cli_fields() if getattr(args, f.name) is not None}
    if "prediction" in given:
        given["prediction"] = normalize_prediction(given["prediction"], TRAIN_PREDICTIONS)
    out = check_out_dir(args.out) if args.out else None  # before any work
    run_opts = dict(ckpt_every=args.ckpt_every, ckpt_minutes=args.ckpt_minutes, log_every=args.log_every,
                    device=args.device)
    if args.resume:
        data = None
        if args.data:  # unspecified split options default to the run's own
            from ..datasets import DataSpec, parse_data_spec
            from ..torch.checkpoint import load_checkpoint

            stored = DataSpec.from_dict(load_checkpoint(Path(args.resume) / "checkpoint.pt")["data"])
            data = parse_data_spec(args.data, stored.holdout if args.holdout is None else args.holdout,
                                   stored.split_seed if args.split_seed is None else args.split_seed,
                                   verify=stored.verify and not args.no_verify)
        overrides = dict(given)
        overrides["model_overrides"] = _model_overrides(args, None)
        job = lambda **kw: train(data, args.resume, args.steps, resume=True,  # noqa: E731
                                 resume_overrides=overrides, **run_opts, **kw)
    else:
        data = _data_spec(args)
        hp = dict(given)
        hp["model_overrides"] = _model_overrides(args, hp.get("model", TrainConfig.model))
        cfg = TrainConfig(**hp)
        job = lambda **kw: train(data, out, args.steps, cfg, **run_opts, **kw)  # noqa: E731
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    try:
        with progress("train step", args.steps, enabled=not args.json, lines_every_s=30.0) as bar:
            summary = job(progress=bar)
    except TrainingInterrupted as exc:
        if rank0:
            run_dir = args.resume or args.out
            hint = f"; continue with: pifskit train --resume {run_dir} --steps {args.steps}" if exc.step else ""
            print(f"pifskit: {exc}{hint}", file=sys.stderr)
        return exc.exit_code
    if not rank0:
        return 0
    if args.json:
        dump_json(summary)
    else:
        print(f"trained to step {summary['step']} ({summary['n_params']} parameters, "
              f"{summary['s_per_step']:.3f} s/step); loss {summary['loss']:.4f}; checkpoint {summary['checkpoint']}")
    return 0


def run_train_classifier(args) -> int:
    import torch

    from ..torch.quality import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train_classifier(_data_spec(args), args.out, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, progress=not args.json)
    if args.json:
        dump_json(summary)
    else:
        print(f"classifier: held-out accuracy {summary['heldout_accuracy']:.4f}; feature Frechet distance floor "
              f"(real vs real, n={summary['floor']['n']}) {summary['floor']['frechet_distance']:.4f}; "
              f"saved {summary['path']}")
    return 0
