"""Options shared by CLI commands: schedule / chain / spectrum selection, JSON output, progress."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from .._json import dump_json as _dump_json
from .._json import to_jsonable  # noqa: F401  (re-exported for commands)
from .._validate import PifsError
from ..chains import SPACINGS, Chain, make_chain
from ..schedules import SCHEDULE_NAMES, Schedule, get_schedule
from ..spectra import IMAGENET_PIXEL_VARIANCE, Spectrum, parse_spectrum

DEFAULT_SCHEDULE = "sd"
DEFAULT_STEPS = 10
DEFAULT_SPACING = "trailing"
DEFAULT_SPECTRUM = "powerlaw:2"
DEFAULT_RESOLUTION = 64
DEFAULT_CHANNELS = 3
#: mean per-pixel variance of ImageNet in [-1, 1] units: mean of (2 * (0.229, 0.224, 0.225))^2 = 0.20432
DEFAULT_PIXEL_VARIANCE = IMAGENET_PIXEL_VARIANCE


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule")
    g.add_argument("--schedule", default=DEFAULT_SCHEDULE,
                   help=f"built-in schedule (default {DEFAULT_SCHEDULE}); one of: {', '.join(SCHEDULE_NAMES)}; "
                        "'name:param' sets the family parameter (e.g. cosine:0.012)")
    g.add_argument("--diffusers-config", metavar="PATH", default=None,
                   help="a diffusers scheduler_config.json (overrides --schedule)")


def add_chain_options(p: argparse.ArgumentParser, steps: int = DEFAULT_STEPS) -> None:
    add_schedule_options(p)
    g = p.add_argument_group("sampling chain")
    g.add_argument("--steps", type=int, default=steps, help=f"number of sampling steps (default {steps})")
    g.add_argument("--spacing", default=None,
                   help=f"step selection: {', '.join(SPACINGS)} (default: the config's timestep_spacing, else "
                        f"{DEFAULT_SPACING})")
    g.add_argument("--timesteps", default=None, metavar="LIST",
                   help="explicit training timesteps, comma-separated, noisiest first (diffusers' timesteps=)")
    g.add_argument("--sigmas", default=None, metavar="LIST",
                   help="explicit VE sigmas, comma-separated, noisiest first; a final 0 lands clean (diffusers' sigmas=)")


def add_spectrum_options(p: argparse.ArgumentParser, *, spectrum: str = DEFAULT_SPECTRUM,
                         resolution: int = DEFAULT_RESOLUTION, channels: int = DEFAULT_CHANNELS,
                         pixel_variance: float = DEFAULT_PIXEL_VARIANCE) -> None:
    """--spectrum/--resolution/--channels/--pixel-variance with the given defaults (shown in --help)."""
    g = p.add_argument_group("data spectrum")
    g.add_argument("--spectrum", default=spectrum,
                   help="powerlaw:P (with --resolution/--channels/--pixel-variance), digits, or file:PATH "
                        f"(default {spectrum})")
    g.add_argument("--resolution", type=int, default=resolution,
                   help=f"image side for powerlaw (default {resolution})")
    g.add_argument("--channels", type=int, default=channels, help=f"channels for powerlaw (default {channels})")
    g.add_argument("--pixel-variance", type=float, default=pixel_variance,
                   help=f"mean per-pixel variance for powerlaw, [-1, 1] units (default {pixel_variance:.5g})")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")


def _parse_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise PifsError(f"--{name} must be a comma-separated list of numbers, got {text!r}") from None


def schedule_from_args(args: argparse.Namespace) -> tuple[Schedule, dict]:
    """The schedule named by --diffusers-config or --schedule, and the config dict (empty for the zoo)."""
    if getattr(args, "diffusers_config", None):
        from ..diffusers_config import load_scheduler_config

        sched, cfg = load_scheduler_config(args.diffusers_config)
        return sched, cfg
    return get_schedule(args.schedule), {}


def chain_from_args(args: argparse.Namespace) -> tuple[Schedule, Chain]:
    """Schedule and chain from the shared options (explicit lists win over --steps/--spacing)."""
    sched, cfg = schedule_from_args(args)
    if args.timesteps and args.sigmas:
        raise PifsError("give either --timesteps or --sigmas, not both")
    if args.timesteps:
        from ..schedules import DiscreteSchedule

        if not isinstance(sched, DiscreteSchedule):
            raise PifsError("--timesteps needs a discrete schedule (sd, ddpm, cosine-discrete or a diffusers config)")
        return sched, Chain.from_timesteps(sched, _parse_list(args.timesteps, "timesteps"),
                                           set_alpha_to_one=cfg.get("set_alpha_to_one", True))
    if args.sigmas:
        from ..schedules import DiscreteSchedule

        return sched, Chain.from_sigmas(_parse_list(args.sigmas, "sigmas"),
                                        sched if isinstance(sched, DiscreteSchedule) else None)
    if cfg:
        from ..diffusers_config import chain_from_config

        return sched, chain_from_config(sched, cfg, args.steps, spacing=args.spacing)
    return sched, make_chain(sched, args.steps, args.spacing or DEFAULT_SPACING)


def spectrum_from_args(args: argparse.Namespace) -> Spectrum:
    return parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)


def dump_json(obj: Any, stream=None) -> None:
    """Print ``obj`` as one valid JSON object (non-finite floats as strings)."""
    _dump_json(obj, stream)


@contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n=1)``. Disabled -> no output."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)
