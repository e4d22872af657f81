"""``pifskit diffusers-kwargs``: the Python line that runs pifskit's designed steps in a diffusers pipeline.

The CLI twin of :func:`pifskit.interop.scheduler_kwargs.schedule_kwargs`: reads a scheduler config (a
``scheduler_config.json``, a scheduler folder, or a pipeline folder written by ``save_pretrained``),
optionally swaps the scheduler class, designs the steps for that scheduler's solver and prints
the lines to paste.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

from .._json import read_json_object
from .._validate import PifsError
from ._common import add_json_option, add_spectrum_options, dump_json

STEPS_SPECTRUM = "powerlaw:1.5"  # the defaults of `pifskit design steps` (an SD-style 64 x 64 x 4 latent)


def _locate(path: str) -> tuple[dict, Path | None]:
    """(scheduler config, pipeline root or None)."""
    p = Path(path)
    if p.is_file():
        return read_json_object(p), (p.parent.parent if (p.parent.parent / "model_index.json").is_file() else None)
    if p.is_dir():
        for cand, root in ((p / "scheduler_config.json", None), (p / "scheduler" / "scheduler_config.json", p)):
            if cand.is_file():
                if root is None and (p.parent / "model_index.json").is_file():
                    root = p.parent
                return read_json_object(cand), root
        raise PifsError(f"{p} holds no scheduler_config.json (nor scheduler/scheduler_config.json)")
    raise PifsError(f"diffusers config not found: {p}")


def _pipeline_spec(root: Path, scheduler) -> tuple[object | None, str | None]:
    """A stand-in with what schedule_kwargs reads from a pipeline (its __call__ keywords, vae scale, patch)."""
    from ..torch.diffusers_models import pipeline_index

    index, cls = pipeline_index(root)
    name = index.get("_class_name", "")
    if cls is None:
        return None, None
    vae = root / "vae" / "config.json"
    vsf = 2 ** (len(read_json_object(vae).get("block_out_channels", [0, 0, 0, 0])) - 1) if vae.is_file() else 8
    model_cfg = {}
    for sub in ("transformer", "unet"):
        if (root / sub / "config.json").is_file():
            model_cfg = read_json_object(root / sub / "config.json")
            break
    spec = SimpleNamespace(scheduler=scheduler, __call__=cls.__call__, vae_scale_factor=vsf,
                           default_sample_size=model_cfg.get("sample_size"),
                           transformer=SimpleNamespace(config=SimpleNamespace(patch_size=model_cfg.get("patch_size"))))
    return spec, name


def run(args: argparse.Namespace) -> int:
    import diffusers

    from ..interop.scheduler_kwargs import pipeline_seq_len, plan_schedule, with_custom_timesteps
    from ..spectra import parse_spectrum

    cfg, root = _locate(args.diffusers_config)
    own = cfg.get("_class_name")
    target = args.scheduler or own
    if not target:
        raise PifsError("the config has no _class_name; pass --scheduler CLASS")
    cls = getattr(diffusers, target, None)
    if cls is None or not hasattr(cls, "set_timesteps"):
        raise PifsError(f"{target!r} is not a diffusers scheduler class")
    sched = cls.from_config({k: v for k, v in cfg.items() if k != "_class_name"})
    wrapped = bool(args.custom_timesteps)
    if wrapped:
        sched = with_custom_timesteps(sched)
    spec, pipe_name = _pipeline_spec(root, sched) if root is not None else (None, None)
    if args.steps < 1:
        raise PifsError(f"--steps must be >= 1, got {args.steps}")
    sp = parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)
    opts: dict = {"spectrum": sp, "prefer": args.prefer}
    if args.start is not None:
        opts["start"] = args.start
    if args.solver:
        opts["solver"] = args.solver
    if args.mu is not None:
        opts["mu"] = args.mu
    elif sched.config.get("use_dynamic_shifting") and spec is not None:
        h = args.height or (spec.default_sample_size or 128) * spec.vae_scale_factor
        w = args.width or (spec.default_sample_size or 128) * spec.vae_scale_factor
        opts["image_seq_len"] = pipeline_seq_len(spec, h, w, pipe_name)
    try:
        plan = plan_schedule(spec if spec is not None else sched, args.steps, **opts)
    except PifsError as exc:
        if "compatible schedulers" in str(exc):
            raise PifsError(f"{exc} (on this command line: --scheduler CLASS"
                            f"{', or --custom-timesteps' if 'with_custom_timesteps' in str(exc) else ''})") from None
        raise
    lines = [f"# pifskit: {plan.n_steps} steps for {plan.scheduler}"
             + (f" (solver {plan.solver})" if plan.solver else " (DDIM criterion)")
             + (f", W2 {plan.design.w2:.4g}" if getattr(plan.design, "w2", None) is not None else "")]
    lines += [f"# {n}" for n in plan.notes]
    if target != own or wrapped:
        lines += [f"from diffusers import {target}", f"pipe.scheduler = {target}.from_config(pipe.scheduler.config)"]
    if wrapped:
        lines += ["from pifskit.interop.scheduler_kwargs import with_custom_timesteps", "with_custom_timesteps(pipe)"]
    lines.append("image = " + plan.python_call() + ".images[0]")
    if args.json:
        dump_json({**plan.to_dict(), "python": lines, "pipeline": pipe_name})
    else:
        print("\n".join(lines))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("diffusers-kwargs", help="print the Python line that runs pifskit's steps in diffusers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--diffusers-config", required=True, metavar="PATH",
                   help="scheduler_config.json, a scheduler folder, or a pipeline folder (save_pretrained)")
    p.add_argument("--scheduler", default=None, metavar="CLASS",
                   help="swap to this diffusers scheduler class (built from the same config), e.g. "
                        "DPMSolverMultistepScheduler")
    p.add_argument("--custom-timesteps", action="store_true",
                   help="give UniPCMultistepScheduler timesteps= (pifskit.interop.scheduler_kwargs.with_custom_timesteps)")
    p.add_argument("--steps", type=int, default=10, help="number of sampling steps N (default 10)")
    add_spectrum_options(p, spectrum=STEPS_SPECTRUM, channels=4, pixel_variance=1.0)
    p.add_argument("--solver", default=None, help="design for this pifskit solver instead of the scheduler's own")
    p.add_argument("--start", default=None, help="the designer's start convention (default: the designer's)")
    p.add_argument("--prefer", default=None, choices=("sigmas", "timesteps"),
                   help="where the scheduler takes both (Euler), which keyword (default sigmas: exact levels)")
    g = p.add_argument_group("flow models with dynamic shifting (Flux, SD3 with use_dynamic_shifting)")
    g.add_argument("--mu", type=float, default=None, help="the resolution shift mu the pipeline will use")
    g.add_argument("--height", type=int, default=None, help="image height in pixels (mu from the pipeline folder)")
    g.add_argument("--width", type=int, default=None, help="image width in pixels")
    add_json_option(p)
    p.set_defaults(handler=run)


