"""``pifskit train`` (denoiser training, resumable) and ``pifskit train-classifier`` (quality features)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._validate import PifsError
from ._common import add_json_option, dump_json

_HP_DEFAULTS = dict(model="dit", prediction="epsilon", schedule="cosine-discrete", batch_size=64, lr=5e-4,
                    weight_decay=0.0, warmup=100, grad_clip=1.0, ema_decay=0.999, seed=0, weighting="uniform",
                    gamma=5.0, reg_weight=0.0, reg_steps=10, reg_margin=0.0, reg_blocks=1, reg_fraction=0.125,
                    reg_patch=4, precision="auto")
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
    g = p.add_argument_group("hyper-parameters (recorded; a resume must not change them)")
    g.add_argument("--model", choices=("dit", "unet"), default=None, help="architecture (default dit)")
    g.add_argument("--prediction", default=None, help="eps | x0 | v (default eps)")
    g.add_argument("--schedule", default=None, help="discrete training schedule: cosine-discrete (default), ddpm, sd")
    g.add_argument("--batch-size", type=int, default=None, help="global batch (default 64)")
    g.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 5e-4)")
    g.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0)")
    g.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 100)")
    g.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip, 0 = off (default 1)")
    g.add_argument("--ema-decay", type=float, default=None, help="EMA decay (default 0.999)")
    g.add_argument("--seed", type=int, default=None, help="seed of init, data order, noise (default 0)")
    g.add_argument("--weighting", choices=("uniform", "min-snr", "geometric"), default=None,
                   help="loss weighting over timesteps (default uniform)")
    g.add_argument("--gamma", type=float, default=None, help="Min-SNR gamma (default 5)")
    g.add_argument("--reg-weight", type=float, default=None, help="weight of the PIFS regulariser (default 0)")
    g.add_argument("--reg-steps", type=int, default=None,
                   help="regulariser: steps of the trailing DDIM chain whose L*_t budgets it uses (default 10)")
    g.add_argument("--reg-margin", type=float, default=None, help="regulariser: budget L*_t (1 + margin) (default 0)")
    g.add_argument("--reg-blocks", type=int, default=None, help="regulariser: probed input blocks (default 1)")
    g.add_argument("--reg-fraction", type=float, default=None,
                   help="regulariser: fraction of the batch regularised (default 0.125)")
    g.add_argument("--reg-patch", type=int, default=None, help="regulariser: patch size for the U-Net (default 4; "
                   "the DiT uses its own patches)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                   help="autocast on GPU (auto: bf16 if supported); CPU runs fp32")
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
    o.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
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

    from ..torch.models import normalize_prediction
    from ..torch.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.out) == bool(args.resume):
        raise PifsError("give exactly one of --out DIR (new run) or --resume DIR (continue a run)")
    given = {k: getattr(args, k) for k in _HP_DEFAULTS if getattr(args, k) is not None}
    if "prediction" in given:
        given["prediction"] = normalize_prediction(given["prediction"])
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
        summary = train(data, args.resume, args.steps, resume=True, resume_overrides=overrides,
                        ckpt_every=args.ckpt_every, log_every=args.log_every, progress=not args.json,
                        device=args.device)
    else:
        data = _data_spec(args)
        hp = {**_HP_DEFAULTS, **given}
        hp["model_overrides"] = _model_overrides(args, hp["model"])
        summary = train(data, args.out, args.steps, TrainConfig(**hp), ckpt_every=args.ckpt_every,
                        log_every=args.log_every, progress=not args.json, device=args.device)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
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
