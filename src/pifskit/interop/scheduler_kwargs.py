"""Hand a pifskit chain, or pifskit's designed steps, to a diffusers scheduler / pipeline.

:func:`pipeline_kwargs` returns ``{"sigmas": [...]}`` (VE, noisiest first, N + 1 values) or
``{"timesteps": [...]}`` (strictly decreasing integers), whichever ``set_timesteps`` accepts;
:func:`schedule_kwargs` / :func:`plan_schedule` design the steps for a scheduler's own config and
solver. torch and diffusers are imported lazily; see docs/diffusers.md for each scheduler's conventions.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import PifsError, check_choice
from ..chains import Chain
from ..schedules import DiscreteSchedule, calculate_shift


def accepted_kwargs(scheduler: Any) -> tuple[str, ...]:
    """Which of ("sigmas", "timesteps") ``scheduler.set_timesteps`` accepts, in pifskit's order of preference."""
    fn = getattr(scheduler, "set_timesteps", None)
    if fn is None:
        raise PifsError(f"{type(scheduler).__name__} has no set_timesteps(); not a diffusers scheduler")
    params = _param_names(fn) or set()
    return tuple(k for k in ("sigmas", "timesteps") if k in params)


def _param_names(fn: Any) -> set[str] | None:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - C-implemented callables
        return None


def scheduler_schedule(scheduler: Any) -> DiscreteSchedule:
    """The scheduler's training schedule (its ``alphas_cumprod``) as a pifskit :class:`DiscreteSchedule`."""
    return DiscreteSchedule(_alphas_cumprod(scheduler).astype(np.float64), name=type(scheduler).__name__)


def _alphas_cumprod(scheduler: Any) -> np.ndarray:
    ab = getattr(scheduler, "alphas_cumprod", None)
    if ab is None:
        raise PifsError(f"{type(scheduler).__name__} has no alphas_cumprod; cannot map levels to timesteps")
    return np.asarray(ab.detach().cpu().numpy() if hasattr(ab, "detach") else ab)


def _timesteps_for(chain: Chain, scheduler: Any) -> list[int]:
    if chain.timesteps is not None and np.allclose(chain.timesteps, np.round(chain.timesteps)):
        ts = np.round(np.asarray(chain.timesteps, dtype=np.float64)).astype(np.int64)
    else:
        from ..design.steps import timesteps_from_sigmas

        ts = timesteps_from_sigmas(scheduler_schedule(scheduler), chain.sigmas[:chain.n_steps])
    if not chain.lands_clean:
        raise PifsError("timesteps= chains in diffusers end at the clean level; this chain does not land clean "
                        "(use a sigmas= scheduler such as EulerDiscreteScheduler)")
    if not (np.diff(ts) < 0).all():
        raise PifsError("timesteps must be strictly decreasing and unique")
    return [int(t) for t in ts]


def pipeline_kwargs(chain: Chain, scheduler: Any, prefer: str | None = None) -> dict[str, list]:
    """``{"sigmas": [...]}`` or ``{"timesteps": [...]}`` for ``pipe(..., **kwargs)`` / ``scheduler.set_timesteps``.

    ``prefer`` ("sigmas" or "timesteps") picks one when the scheduler accepts both
    (default: sigmas, the exact levels; timesteps are rounded to integers).
    """
    if not isinstance(chain, Chain):
        raise PifsError(f"expected a pifskit Chain, got {type(chain).__name__}")
    accepted = _preferred(accepted_kwargs(scheduler), prefer)
    if not accepted:
        raise PifsError(f"{type(scheduler).__name__}.set_timesteps accepts neither sigmas= nor timesteps=; "
                        "use e.g. EulerDiscreteScheduler (sigmas) or DDPMScheduler / DPMSolverMultistepScheduler "
                        "(timesteps) built from the same config (Scheduler.from_config(pipe.scheduler.config))")
    if accepted[0] == "sigmas":
        if chain.starts_from_noise:
            raise PifsError("the chain starts from pure noise (sigma = inf); diffusers needs a finite sigma_max")
        return {"sigmas": [float(s) for s in chain.sigmas]}
    return {"timesteps": _timesteps_for(chain, scheduler)}


def _preferred(kinds: tuple[str, ...], prefer: str | None) -> tuple[str, ...]:
    """``kinds`` with those that start with ``prefer`` ('sigmas' or 'timesteps') first."""
    if prefer is None:
        return kinds
    check_choice(prefer, "prefer", ("sigmas", "timesteps"))
    return tuple(sorted(kinds, key=lambda k: not k.startswith(prefer)))


def set_chain(scheduler: Any, chain: Chain, device: Any = None, prefer: str | None = None) -> dict[str, list]:
    """Call ``scheduler.set_timesteps(**pipeline_kwargs(chain, scheduler), device=device)``; returns the kwargs."""
    kw = pipeline_kwargs(chain, scheduler, prefer)
    scheduler.set_timesteps(device=device, **kw)
    return kw


#: diffusers scheduler class -> pifskit solver names, preferred first. A solver-aware designer
#: (``optimal_steps(..., solver=)``) gets the first name it knows; DPMSolverMultistepScheduler's
#: entry is chosen by its ``solver_order`` / ``algorithm_type`` (see :func:`solver_for`).
SOLVER_OF_SCHEDULER: dict[str, tuple[str, ...]] = {
    "DDIMScheduler": ("ddim",),
    "DDIMParallelScheduler": ("ddim",),
    "DDPMScheduler": ("ddpm", "ddim"),
    "DDPMParallelScheduler": ("ddpm", "ddim"),
    "PNDMScheduler": ("pndm", "ipndm", "ddim"),
    "IPNDMScheduler": ("ipndm", "ddim"),
    "EulerDiscreteScheduler": ("euler", "ddim"),
    "EulerAncestralDiscreteScheduler": ("euler-ancestral", "euler", "ddim"),
    "HeunDiscreteScheduler": ("heun",),
    "LMSDiscreteScheduler": ("lms", "euler", "ddim"),
    "DPMSolverMultistepScheduler": ("dpmpp2m",),
    "DPMSolverMultistepScheduler:1": ("ddim",),  # first-order DPM-Solver(++) is DDIM
    "DPMSolverMultistepScheduler:3": ("dpmpp3m", "dpmpp2m"),
    "DPMSolverMultistepScheduler:sde": ("dpmpp2m-sde", "dpmpp2m"),
    "DPMSolverSinglestepScheduler": ("dpmpp2s", "dpmpp2m"),
    "UniPCMultistepScheduler": ("unipc", "unipc-bh2", "dpmpp2m"),
    "DEISMultistepScheduler": ("deis", "dpmpp2m"),
    "FlowMatchEulerDiscreteScheduler": ("euler", "ddim"),
    "FlowMatchHeunDiscreteScheduler": ("heun",),
}

#: how each supported scheduler takes custom levels: 'sigmas' (VE, N + 1 values ending in 0),
#: 'timesteps' (integer), 'timesteps-float' (fractional timesteps, exact levels), 'flow' (N flow sigmas,
#: the scheduler's shift applied on top)
_KIND: dict[str, tuple[str, ...]] = {
    "EulerDiscreteScheduler": ("sigmas", "timesteps-float"),
    "HeunDiscreteScheduler": ("timesteps-float",),
    "DPMSolverMultistepScheduler": ("timesteps",),
    "DDPMScheduler": ("timesteps",),
    "FlowMatchEulerDiscreteScheduler": ("flow",),
}
_CUSTOM_TIMESTEPS_CLASSES = ("UniPCMultistepScheduler",)
COMPATIBLE = ("EulerDiscreteScheduler (sigmas=)", "HeunDiscreteScheduler (timesteps=)",
              "DPMSolverMultistepScheduler (timesteps=)", "DDPMScheduler (timesteps=)",
              "FlowMatchEulerDiscreteScheduler (sigmas=, flow models)",
              "UniPCMultistepScheduler after with_custom_timesteps()")
_SWAP: dict[str, str] = {
    "DDIMScheduler": "EulerDiscreteScheduler",  # the same deterministic first-order step, in sigma
    "DDIMParallelScheduler": "EulerDiscreteScheduler",
    "PNDMScheduler": "DPMSolverMultistepScheduler",
    "LMSDiscreteScheduler": "DPMSolverMultistepScheduler",
    "EulerAncestralDiscreteScheduler": "EulerDiscreteScheduler",
    "DEISMultistepScheduler": "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler": "DPMSolverMultistepScheduler",
    "KDPM2DiscreteScheduler": "HeunDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler": "FlowMatchEulerDiscreteScheduler",
}

#: the default data model of ``pifskit design steps`` (an SD-style 64 x 64 x 4 latent, unit variance,
#: |k|^-1.5 power law); schedule_kwargs uses the same so both give the same levels
DEFAULT_SPECTRUM = "powerlaw:1.5"
DEFAULT_RESOLUTION = 64
DEFAULT_CHANNELS = 4
DEFAULT_PIXEL_VARIANCE = 1.0


@dataclass
class SchedulePlan:
    """What :func:`plan_schedule` decided for one scheduler.

    ``kwargs``: for ``pipe(...)`` / ``scheduler.set_timesteps(...)``; ``levels``: the designed noise
    levels in step order, ending at the clean level (VE sigmas, or flow sigmas t' for flow schedulers);
    ``scheduler_sigmas`` / ``scheduler_timesteps``: what the scheduler holds after
    ``set_timesteps(**kwargs)`` (float32, Heun's repeated entries included; computed by pifskit,
    not by diffusers); ``solver``: the pifskit solver the levels were designed for (None when the
    designer is not solver-aware).
    """

    scheduler: str
    kind: str
    kwargs: dict
    levels: np.ndarray
    scheduler_sigmas: np.ndarray | None
    scheduler_timesteps: np.ndarray
    solver: str | None
    design: Any
    flow_sigmas: np.ndarray | None = None
    mu: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return int(self.levels.size - 1)

    def python_call(self, target: str = "pipe", first_arg: str = "prompt") -> str:
        """The line to paste, e.g. ``pipe(prompt, sigmas=[14.61, ..., 0.0])``."""
        def fmt(v):
            if isinstance(v, list):
                return "[" + ", ".join(repr(x) if isinstance(x, int) else f"{x:.8g}" for x in v) + "]"
            return f"{v:.10g}" if isinstance(v, float) else repr(v)
        args = ", ".join(f"{k}={fmt(v)}" for k, v in self.kwargs.items())
        return f"{target}({first_arg}, {args})" if first_arg else f"{target}({args})"

    def to_dict(self) -> dict:
        return {"scheduler": self.scheduler, "kind": self.kind, "kwargs": self.kwargs, "solver": self.solver,
                "levels": self.levels, "flow_sigmas": self.flow_sigmas, "mu": self.mu,
                "scheduler_sigmas": self.scheduler_sigmas, "scheduler_timesteps": self.scheduler_timesteps,
                "n_steps": self.n_steps, "w2": getattr(self.design, "w2", None), "notes": self.notes}


def _split(obj: Any) -> tuple[Any, Any]:
    """(scheduler, pipeline or None) from a scheduler or a pipeline."""
    if hasattr(obj, "set_timesteps"):
        return obj, None
    sched = getattr(obj, "scheduler", None)
    if sched is None or not hasattr(sched, "set_timesteps"):
        raise PifsError(f"{type(obj).__name__} is neither a diffusers scheduler nor a pipeline with a .scheduler")
    return sched, obj


def _cfg(scheduler: Any) -> dict:
    return dict(getattr(scheduler, "config", {}) or {})


def solver_for(scheduler: Any) -> tuple[str, ...]:
    """pifskit solver names for a scheduler (class and config), preferred first; () when unknown."""
    name = type(scheduler).__name__
    cfg = _cfg(scheduler)
    if name == "DPMSolverMultistepScheduler":
        if str(cfg.get("algorithm_type", "dpmsolver++")).startswith("sde"):
            return SOLVER_OF_SCHEDULER["DPMSolverMultistepScheduler:sde"]
        order = int(cfg.get("solver_order", 2))
        return SOLVER_OF_SCHEDULER.get(f"{name}:{order}", SOLVER_OF_SCHEDULER[name])
    for klass in type(scheduler).__mro__:  # with_custom_timesteps' subclasses keep the base's entry
        if klass.__name__ in SOLVER_OF_SCHEDULER:
            return SOLVER_OF_SCHEDULER[klass.__name__]
    return ()


def _base_name(scheduler: Any) -> str:
    return getattr(type(scheduler), "_pifskit_base", type(scheduler).__name__)


def _swap_hint(name: str, pipe: Any) -> str:
    target = _SWAP.get(name, "DPMSolverMultistepScheduler")
    where = "pipe.scheduler" if pipe is not None else "scheduler"
    hint = f"swap with `from diffusers import {target}; {where} = {target}.from_config({where}.config)`"
    if name in _CUSTOM_TIMESTEPS_CLASSES:
        hint += f", or keep {name} with `pifskit.interop.scheduler_kwargs.with_custom_timesteps(pipe)`"
    return hint


def _incompatible(name: str, pipe: Any, why: str) -> PifsError:
    return PifsError(f"{name} {why}; compatible schedulers: {', '.join(COMPATIBLE)}; {_swap_hint(name, pipe)}")


def _call_params(pipe: Any) -> set[str] | None:
    return None if pipe is None else _param_names(pipe.__call__)


def _flag_error(name: str, cfg: dict, keys: tuple[str, ...]) -> None:
    on = [k for k in keys if cfg.get(k)]
    if on:
        fix = ", ".join(f"{k}={'None' if k == 'shift_terminal' else 'False'}" for k in on)
        raise PifsError(f"{name} has {', '.join(on)} set, which replaces custom levels with its own; rebuild it "
                        f"without: `{name}.from_config(pipe.scheduler.config, {fix})`")


def _design(schedule, spectrum, steps: int, solvers: tuple[str, ...], design_options: dict):
    """optimal_steps with the first of ``solvers`` it accepts (``solver=`` in design_options overrides them);
    returns (design, solver)."""
    from ..design.steps import optimal_steps

    if "solver" in design_options:
        solvers = (design_options.pop("solver"),)
    last: PifsError | None = None
    for name in solvers:
        try:
            return optimal_steps(schedule, spectrum, steps, solver=name, **design_options), name
        except PifsError as exc:
            if "solver" not in str(exc).lower():
                raise
            last = exc
    if last is None:
        return optimal_steps(schedule, spectrum, steps, **design_options), None
    raise last


def _spectrum(spectrum: Any):
    from ..spectra import Spectrum, parse_spectrum

    if spectrum is None:
        spectrum = DEFAULT_SPECTRUM
    if isinstance(spectrum, str):
        return parse_spectrum(spectrum, DEFAULT_RESOLUTION, DEFAULT_CHANNELS, DEFAULT_PIXEL_VARIANCE)
    if not isinstance(spectrum, Spectrum):
        raise PifsError(f"spectrum must be a pifskit Spectrum or a spec string, got {type(spectrum).__name__}")
    return spectrum


def _table32(scheduler: Any) -> np.ndarray:
    """diffusers' float32 VE table sqrt((1 - ab) / ab), t = 0 first."""
    ab = _alphas_cumprod(scheduler).astype(np.float32)
    return np.sqrt((np.float32(1.0) - ab) / ab)


def _vp_schedule(scheduler: Any):
    from ..scheduler_config import load_scheduler_config

    cfg = {k: v for k, v in _cfg(scheduler).items() if not k.startswith("_")}
    cfg["_class_name"] = "DDPMScheduler"  # any VP class: only the training schedule is read
    cfg["timestep_spacing"] = "leading"
    return load_scheduler_config(cfg)[0]


def _shift_mu(scheduler: Any, pipe: Any, mu: float | None, image_seq_len: int | None,
              height: int | None, width: int | None) -> float:
    """The dynamic-shifting mu the pipeline computes (diffusers' calculate_shift), or the given one."""
    if mu is not None:
        return float(mu)
    cfg = _cfg(scheduler)
    if image_seq_len is None:
        if pipe is None:
            raise PifsError("this FlowMatch scheduler uses dynamic shifting: pass mu= (or image_seq_len=) -- "
                            "the resolution-dependent shift the pipeline would compute")
        vsf = int(getattr(pipe, "vae_scale_factor", 8))
        default = getattr(pipe, "default_sample_size", None)
        h = height or (default * vsf if default else None)
        w = width or (default * vsf if default else None)
        if not h or not w:
            raise PifsError("dynamic shifting: pass height= and width= (the resolution you will generate at)")
        image_seq_len = pipeline_seq_len(pipe, int(h), int(w))
    return calculate_shift(image_seq_len, cfg)


def pipeline_seq_len(pipe: Any, height: int, width: int) -> int:
    """Latent tokens the pipeline computes its dynamic-shift mu from: Flux packs 2 x 2 latent patches,
    SD3-style transformers use their config's patch_size (H / vae_scale_factor / p each side)."""
    vsf, pname = int(getattr(pipe, "vae_scale_factor", 8)), type(pipe).__name__
    if "Flux" in pname:
        p = 2
    else:
        p = int(getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", 0) or 0)
        if not p:
            raise PifsError(f"cannot tell how {pname} computes its dynamic-shift mu; pass mu= explicitly")
    return (height // vsf // p) * (width // vsf // p)


def _plan_flow(scheduler, pipe, name, steps, spectrum, solvers, design_options, mu, image_seq_len,
               height, width) -> SchedulePlan:
    from ..scheduler_config import load_scheduler_config

    cfg = _cfg(scheduler)
    _flag_error(name, cfg, ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "shift_terminal",
                            "invert_sigmas"))
    notes = []
    dynamic = bool(cfg.get("use_dynamic_shifting"))
    if dynamic:
        mu_v = _shift_mu(scheduler, pipe, mu, image_seq_len, height, width)
        kind = cfg.get("time_shift_type", "exponential")
        s_eff = float(np.exp(mu_v)) if kind == "exponential" else mu_v
        notes.append(f"dynamic shifting: mu = {mu_v:.6g} ({kind}), effective shift {s_eff:.6g}; the scheduler "
                     "applies it on top of the sigmas, so they are handed over unshifted")
    else:
        mu_v = None
        s_eff = float(getattr(scheduler, "shift", cfg.get("shift", 1.0)))
        if s_eff != 1.0:
            notes.append(f"the scheduler applies its shift {s_eff:g} on top of custom sigmas, so they are handed "
                         "over unshifted")
    raw = {k: v for k, v in cfg.items() if not k.startswith("_")}
    raw.update({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": s_eff, "use_dynamic_shifting": False})
    schedule = load_scheduler_config(raw)[0]
    design, solver = _design(schedule, spectrum, steps, solvers, design_options)
    fs = np.asarray(design.flow_sigmas, dtype=np.float64)  # t' = sigma / (1 + sigma) of the noisy levels
    if not (fs.size >= 1 and fs[0] == 1.0 and (fs > 0).all() and (fs <= 1).all()):
        raise PifsError("the designed flow sigmas are not N values in (0, 1] starting at 1.0")
    # invert the scheduler's shift: s' = S t / (1 + (S - 1) t)  <=>  t = s' / (s' + S (1 - s'))
    handed = fs / (fs + s_eff * (1.0 - fs))
    kwargs: dict = {"sigmas": [float(v) for v in handed]}
    call = _call_params(pipe)
    if call is not None and "sigmas" not in call:
        raise PifsError(f"{type(pipe).__name__}.__call__ has no sigmas=; FlowMatch levels cannot be passed to it "
                        "(the pipeline overwrites anything set on the scheduler beforehand)")
    if dynamic and (call is None or "mu" in call):
        kwargs["mu"] = float(mu_v)
    elif dynamic:
        notes.append(f"{type(pipe).__name__} computes mu itself from the latent size: call it with the same "
                     "height/width as here")
    T = int(cfg.get("num_train_timesteps", 1000))
    # what the scheduler computes (float32): shifted = S t / (1 + (S - 1) t), timesteps = shifted * T
    t32 = np.asarray(handed, dtype=np.float32)
    if dynamic:  # diffusers' time_shift: S / (S + (1 / t - 1)), S = e^mu (exponential) or mu (linear)
        shifted = (s_eff / (s_eff + (1 / t32 - 1))).astype(np.float32)
    else:
        shifted = (s_eff * t32 / (1 + (s_eff - 1) * t32)).astype(np.float32)
    levels = np.concatenate([fs, [0.0]])
    return SchedulePlan(scheduler=name, kind="flow", kwargs=kwargs, levels=levels,
                        scheduler_sigmas=np.concatenate([shifted, [0.0]]).astype(np.float32),
                        scheduler_timesteps=(shifted.astype(np.float32) * np.float32(T)).astype(np.float32),
                        solver=solver, design=design, flow_sigmas=fs, mu=mu_v, notes=notes)


def plan_schedule(scheduler_or_pipeline: Any, steps: int, *, spectrum: Any = None, prefer: str | None = None,
                  mu: float | None = None, image_seq_len: int | None = None, height: int | None = None,
                  width: int | None = None, **design_options) -> SchedulePlan:
    """Design pifskit's steps for this scheduler (its config and solver); the kwargs and what it will run.

    ``spectrum``: a :class:`pifskit.spectra.Spectrum` or a spec (default ``powerlaw:1.5`` on a
    64 x 64 x 4 latent, as ``pifskit design steps``); ``prefer``: 'sigmas' or 'timesteps' where both
    work; ``mu`` / ``image_seq_len`` / ``height`` + ``width``: the resolution shift of dynamic-shifting
    flow schedulers; ``design_options``: passed to :func:`pifskit.design.steps.optimal_steps`
    (``start``, ``fixed_endpoints``, ``solver`` to override the scheduler's own, ...).
    """
    sched, pipe = _split(scheduler_or_pipeline)
    name = _base_name(sched)
    sp = _spectrum(spectrum)
    solvers = solver_for(sched)
    if prefer is not None:
        check_choice(prefer, "prefer", ("sigmas", "timesteps"))
    if _KIND.get(name) == ("flow",):
        return _plan_flow(sched, pipe, name, steps, sp, solvers, dict(design_options), mu, image_seq_len,
                          height, width)
    cfg = _cfg(sched)
    if getattr(type(sched), "_pifskit_base", None) is not None:
        kinds: tuple[str, ...] = ("timesteps",)
    elif name in _KIND:
        kinds = _KIND[name]
    else:
        raise _incompatible(name, pipe, "takes neither sigmas= nor timesteps= that pifskit can hand it")
    if cfg.get("use_flow_sigmas"):
        raise _incompatible(name, pipe, "is configured with use_flow_sigmas (flow levels in a VP scheduler)")
    call = _call_params(pipe)
    if call is not None:
        kinds = tuple(k for k in kinds if k.split("-")[0] in call)
        if not kinds:
            raise PifsError(f"{type(pipe).__name__}.__call__ accepts neither sigmas= nor timesteps=; set the "
                            "levels yourself: `pipe.scheduler.set_timesteps(**kwargs)` is overwritten by the "
                            "pipeline, so use a pipeline that takes them (e.g. StableDiffusionPipeline) or call the "
                            "pipeline's denoising loop with the scheduler prepared")
    kind = _preferred(kinds, prefer)[0]
    if kind != "sigmas":
        _flag_error(name, cfg, ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas"))
        if cfg.get("final_sigmas_type", "zero") != "zero":
            raise PifsError(f"{name} has final_sigmas_type={cfg.get('final_sigmas_type')!r}: its last step stops at "
                            f"sigma_min, not at the clean level the design lands on; rebuild it with "
                            f"`{name}.from_config(pipe.scheduler.config, final_sigmas_type='zero')`")
    schedule = _vp_schedule(sched)
    design, solver = _design(schedule, sp, steps, solvers, dict(design_options))
    table = _table32(sched)
    levels = np.asarray(design.sigmas, dtype=np.float64)
    notes: list[str] = []
    if kind == "sigmas":
        if not np.isfinite(levels).all():
            raise PifsError("the design starts at sigma = inf; diffusers needs finite sigmas")
        kwargs: dict = {"sigmas": [float(v) for v in levels]}
        s_sig = levels.astype(np.float32)
        s_ts = schedule.timestep_of_sigma(levels[:-1]).astype(np.float32)
    elif kind == "timesteps-float":
        # the scheduler interpolates sigma linearly in t between the integer knots: invert that
        knots = np.arange(table.size, dtype=np.float64)
        s_ts = np.interp(levels[:-1], table.astype(np.float64), knots).astype(np.float32)
        if not (np.diff(s_ts) < 0).all():
            raise PifsError("designed levels collapse to duplicate timesteps in float32; use fewer steps")
        kwargs = {"timesteps": [float(v) for v in s_ts]}
        s_sig = np.concatenate([np.interp(s_ts, knots, table), [0.0]]).astype(np.float32)
        notes.append("fractional timesteps: the scheduler interpolates sigma linearly between training "
                     "timesteps, so these reproduce the designed sigmas exactly")
    else:
        s_ts = getattr(design, "timesteps", None)
        if s_ts is None:
            from ..design.steps import timesteps_from_sigmas

            s_ts = timesteps_from_sigmas(schedule, levels[levels > 0])
        s_ts = np.asarray(s_ts, dtype=np.int64)
        kwargs = {"timesteps": [int(t) for t in s_ts]}
        s_sig = np.concatenate([table[s_ts], [0.0]]).astype(np.float32)
        levels = s_sig.astype(np.float64)
        notes.append("integer timesteps: the levels are the designed ones rounded to training timesteps "
                     "(unique, strictly decreasing: no duplicate-timestep index errors)")
    if name == "HeunDiscreteScheduler":  # Heun repeats every interior level (two model calls per step)
        s_sig = np.concatenate([s_sig[:1], np.repeat(s_sig[1:-1], 2), s_sig[-1:]])
        s_ts = np.concatenate([s_ts[:1], np.repeat(s_ts[1:], 2)])
    return SchedulePlan(scheduler=name, kind=kind.split("-")[0], kwargs=kwargs, levels=levels,
                        scheduler_sigmas=None if name.startswith("DDPM") else s_sig,
                        scheduler_timesteps=np.asarray(s_ts), solver=solver, design=design, notes=notes)


def schedule_kwargs(scheduler_or_pipeline: Any, steps: int, **design_options) -> dict:
    """pifskit's designed steps as the kwargs this scheduler / pipeline accepts: ``pipe(prompt, **kw)``.

    ``{"sigmas": [...]}`` (Euler: N + 1 VE sigmas ending in 0; FlowMatch: N flow sigmas with the
    scheduler's shift inverted, plus ``"mu"`` under dynamic shifting where the target accepts it) or
    ``{"timesteps": [...]}`` (DPM-Solver, DDPM: N unique integer timesteps; Heun: fractional ones
    reproducing the sigmas exactly). Options: see :func:`plan_schedule`. A scheduler that cannot take
    custom levels raises :class:`PifsError` naming the compatible ones and how to swap.
    """
    return plan_schedule(scheduler_or_pipeline, steps, **design_options).kwargs


@functools.cache
def _custom_class(base: type) -> type:
    import torch

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None, **kw):
        """``set_timesteps`` of the base class, plus ``timesteps=`` (unique, strictly decreasing integers)."""
        if timesteps is None:
            return base.set_timesteps(self, num_inference_steps, device=device, **kw)
        if num_inference_steps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `timesteps`.")
        cfg = self.config
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas"):
            if cfg.get(flag):
                raise ValueError(f"Cannot set `timesteps` with `config.{flag} = True`.")
        if getattr(self, "solver_p", None) is not None:
            raise ValueError("Cannot set `timesteps` with a solver_p predictor")
        ts = np.asarray(timesteps, dtype=np.float64)
        T = int(cfg.num_train_timesteps)
        if ts.ndim != 1 or ts.size == 0 or not np.allclose(ts, np.round(ts)) or (np.diff(ts) >= 0).any() \
                or ts[0] > T - 1 or ts[-1] < 0:
            raise ValueError(f"`timesteps` must be unique, strictly decreasing integers in [0, {T - 1}]")
        ts = np.round(ts).astype(np.int64)
        base.set_timesteps(self, int(ts.size), device=device)  # resets the solver state for len(ts) steps
        table = np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
        sig = np.interp(ts, np.arange(0, len(table)), table)
        last = 0.0 if cfg.get("final_sigmas_type", "zero") == "zero" else float(table[0])
        self.sigmas = torch.from_numpy(np.concatenate([sig, [last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(ts).to(device=device, dtype=torch.int64)
        self.num_inference_steps = int(ts.size)

    cls = type(base.__name__, (base,), {"set_timesteps": set_timesteps, "_pifskit_base": base.__name__,
                                         "__module__": base.__module__})
    return cls


def with_custom_timesteps(scheduler_or_pipeline: Any) -> Any:
    """Give a UniPC scheduler ``timesteps=`` (diffusers' UniPC takes neither sigmas= nor timesteps=).

    Returns a new scheduler of a subclass with the same name and config whose ``set_timesteps`` also
    accepts ``timesteps=``: it sets up the solver for len(timesteps) steps and puts the listed
    timesteps and their sigmas (diffusers' interpolation, final sigma per ``final_sigmas_type``) in
    place, as DPMSolverMultistepScheduler does. Given a pipeline, it replaces ``pipe.scheduler``
    and returns the pipeline.
    """
    sched, pipe = _split(scheduler_or_pipeline)
    base = type(sched)
    if getattr(base, "_pifskit_base", None) is not None:
        return scheduler_or_pipeline
    if base.__name__ not in _CUSTOM_TIMESTEPS_CLASSES:
        raise PifsError(f"with_custom_timesteps supports {', '.join(_CUSTOM_TIMESTEPS_CLASSES)}, not {base.__name__}")
    new = _custom_class(base).from_config(sched.config)
    if pipe is None:
        return new
    pipe.scheduler = new
    return pipe
