"""Options shared by CLI commands: schedule / chain / spectrum selection, JSON output, progress."""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .._json import dump_json  # noqa: F401  (re-exported for commands)
from ..chains import SPACING_RULE, SPACINGS, Chain
from ..resolve import resolve_chain
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
                        "'name:param' sets the family parameter (e.g. cosine:0.012); case-insensitive. "
                        "sd / ddpm (= diffusers' scaled_linear / linear) are 1000-step discrete grids; "
                        "sd-scaled-linear / ddpm-linear are their continuous-time limits")
    g.add_argument("--diffusers-config", metavar="PATH", default=None,
                   help="a diffusers scheduler_config.json, or a folder holding one (or scheduler/...) "
                        "(overrides --schedule)")


def add_chain_options(p: argparse.ArgumentParser, steps: int = DEFAULT_STEPS) -> None:
    add_schedule_options(p)
    g = p.add_argument_group("sampling chain")
    g.add_argument("--steps", type=int, default=steps, help=f"number of sampling steps (default {steps})")
    g.add_argument("--spacing", default=None,
                   help=f"step selection: {', '.join(SPACINGS)} (default: the config's timestep_spacing, else "
                        f"{DEFAULT_SPACING}). Rule: {SPACING_RULE}; a mapped request prints a note")
    g.add_argument("--timesteps", type=number_list, default=None, metavar="LIST",
                   help="explicit training timesteps, comma-separated, noisiest first (diffusers' timesteps=)")
    g.add_argument("--sigmas", type=number_list, default=None, metavar="LIST",
                   help="explicit VE sigmas, comma-separated, noisiest first; a final 0 lands clean "
                        "(diffusers' sigmas=)")


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


def number_list(text: str) -> list[float]:
    """argparse ``type=`` for LIST options: comma-separated numbers."""
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None


def schedule_from_args(args: argparse.Namespace, schedule: str | None = None,
                       config: str | dict | None = None) -> tuple[Schedule, dict]:
    """The schedule named by --diffusers-config or --schedule (else the command's defaults ``config`` /
    ``schedule``), and the config dict (empty for the zoo)."""
    config = args.diffusers_config or (config if args.schedule is None else None)
    if config:
        from ..scheduler_config import load_scheduler_config

        return load_scheduler_config(config)
    return get_schedule(args.schedule or schedule or DEFAULT_SCHEDULE), {}


def chain_from_args(args: argparse.Namespace, schedule: str | None = None,
                    config: str | dict | None = None) -> tuple[Schedule, Chain]:
    """Schedule (as :func:`schedule_from_args`) and chain via :func:`pifskit.resolve.resolve_chain`; prints its
    notices."""
    sched, cfg = schedule_from_args(args, schedule, config)
    chain = resolve_chain(sched, args.steps, args.spacing, args.timesteps, args.sigmas, config=cfg or None)
    print_notices(chain)
    return sched, chain


def print_notices(chain: Chain) -> None:
    for note in chain.meta.get("notices", ()):
        print(f"pifskit: note: {note}", file=sys.stderr)


def spectrum_from_args(args: argparse.Namespace) -> Spectrum:
    return parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)


def _duration(seconds: float) -> str:
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}"


class _Advance:
    """The callback a library function gets: ``advance(n=1)`` adds n; ``advance(completed=k)`` sets the count;
    keyword fields (e.g. ``loss=0.12``) are shown after the bar once given.

    Modes: a rich bar (``prog``), plain stderr lines every ``lines_every_s`` seconds (output not a TTY),
    or nothing.
    """

    def __init__(self, prog=None, task=None, *, description: str = "", total: int = 0,
                 lines_every_s: float | None = None):
        self.prog, self.task, self._first = prog, task, True
        self.description, self.total, self.lines_every_s = description, total, lines_every_s
        self.done, self.t0, self.start, self.t_line = 0, time.perf_counter(), 0, -math.inf

    def _line(self, info: str) -> None:
        now = time.perf_counter()
        if not (now - self.t_line >= self.lines_every_s or self.done >= self.total or self._first):
            return
        self.t_line = now
        rate = (self.done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(f"{self.description} {self.done}/{self.total} ({pct:.0f}%)  {info}  elapsed {_duration(now - self.t0)}"
              + (f"  eta {_duration(eta)}" if math.isfinite(eta) else ""), file=sys.stderr, flush=True)

    def __call__(self, n: int = 1, *, completed: int | None = None, **fields: Any) -> None:
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        if self.prog is None:
            if self.lines_every_s is not None:
                if completed is not None and self._first:  # e.g. a resumed run: rate and ETA from here
                    self.start, self.t0 = completed - 1, time.perf_counter()
                self.done = completed if completed is not None else self.done + n
                self._line(info)
                self._first = False
            return
        extra = {"info": info} if fields else {}
        if completed is None:
            self.prog.update(self.task, advance=n, **extra)
        elif self._first:  # e.g. a resumed run: start the rate (and ETA) estimate here, not at 0
            self.prog.reset(self.task, completed=completed, **extra)
        else:
            self.prog.update(self.task, completed=completed, **extra)
        self._first = False

    def __bool__(self) -> bool:
        return self.prog is not None or self.lines_every_s is not None


@contextmanager
def progress(description: str, total: int, enabled: bool = True,
             lines_every_s: float | None = None) -> Iterator[_Advance]:
    """The one progress bar of the CLI (rich, on stderr): count, elapsed time, ETA and fields.

    Yields an :class:`_Advance` callback for the library (which never draws bars itself). When stderr
    is not a TTY: a plain line every ``lines_every_s`` seconds (and at the first and last update), or
    nothing if that is None; disabled -> a no-op callback.
    """
    if not enabled:
        yield _Advance()
        return
    if not sys.stderr.isatty():
        yield _Advance(description=description, total=total, lines_every_s=lines_every_s)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=Console(stderr=True), transient=True) as prog:
        yield _Advance(prog, prog.add_task(description, total=total, info=""))
