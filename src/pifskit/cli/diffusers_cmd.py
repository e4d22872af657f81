"""``pifskit diffusers-kwargs``: the Python lines that run pifskit's designed steps in a diffusers pipeline.

The CLI twin of :func:`pifskit.interop.scheduler_kwargs.plan_schedule`, from a scheduler config, a scheduler
folder or a pipeline folder (``save_pretrained``); ``--scheduler`` swaps the scheduler class.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

from .._json import read_json_object
from .._validate import PifsError
from ..interop.scheduler_kwargs import DEFAULT_CHANNELS, DEFAULT_PIXEL_VARIANCE, DEFAULT_SPECTRUM
from ._common import add_json_option, add_spectrum_options, dump_json


def _locate(path: str) -> tuple[dict, Path | None]:
    """(scheduler config, pipeline root or None)."""
    from ..scheduler_config import find_scheduler_config

    p = Path(path)
    cfg = find_scheduler_config(p)
    root = cfg.parent.parent
    in_pipeline = p.is_dir() and cfg.parent != p  # a pipeline folder: scheduler/scheduler_config.json
    return read_json_object(cfg), root if in_pipeline or (root / "model_index.json").is_file() else None


def _pipeline_spec(root: Path, scheduler) -> object | None:
    """A stand-in named as the pipeline class, with what plan_schedule reads from a pipeline (its __call__
    keywords, vae scale, sample size (default 128), transformer patch size); None for an unknown class."""
    from ..torch.diffusers_models import pipeline_index

    index, cls = pipeline_index(root)
    if cls is None:
        return None
    vae = root / "vae" / "config.json"
    vsf = 2 ** (len(read_json_object(vae).get("block_out_channels", [0, 0, 0, 0])) - 1) if vae.is_file() else 8
    model_cfg = {}
    for sub in ("transformer", "unet"):
        if (root / sub / "config.json").is_file():
            model_cfg = read_json_object(root / sub / "config.json")
            break
    patch = SimpleNamespace(config=SimpleNamespace(patch_size=model_cfg.get("patch_size")))
    return type(cls.__name__, (SimpleNamespace,), {})(
        scheduler=scheduler, __call__=cls.__call__, vae_scale_factor=vsf,
        default_sample_size=model_cfg.get("sample_size") or 128, transformer=patch)


def run(args: argparse.Namespace) -> int:
    import diffusers

    from ..interop.scheduler_kwargs import plan_schedule, with_custom_timesteps
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
    spec = _pipeline_spec(root, sched) if root is not None else None
    if args.steps < 1:
        raise PifsError(f"--steps must be >= 1, got {args.steps}")
    sp = parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)
    opts: dict = {"spectrum": sp, "prefer": args.prefer, "mu": args.mu, "height": args.height, "width": args.width}
    if args.start is not None:
        opts["start"] = args.start
    if args.solver:
        opts["solver"] = args.solver
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
        dump_json({**plan.to_dict(), "python": lines, "pipeline": None if spec is None else type(spec).__name__})
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
                   help="give UniPCMultistepScheduler timesteps= "
                        "(pifskit.interop.scheduler_kwargs.with_custom_timesteps)")
    p.add_argument("--steps", type=int, default=10, help="number of sampling steps N (default 10)")
    add_spectrum_options(p, spectrum=DEFAULT_SPECTRUM, channels=DEFAULT_CHANNELS, pixel_variance=DEFAULT_PIXEL_VARIANCE)
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
