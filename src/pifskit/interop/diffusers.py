"""Hand a pifskit chain to a diffusers scheduler / pipeline.

diffusers' pipelines pass ``timesteps=`` or ``sigmas=`` through to
``scheduler.set_timesteps``; which one a scheduler accepts is visible in that
method's signature (``EulerDiscreteScheduler``: both; ``DDPMScheduler``,
``DPMSolverMultistepScheduler``: ``timesteps``; ``DDIMScheduler``: neither, its
``step`` assumes uniform spacing). :func:`pipeline_kwargs` inspects the
signature and returns the matching keyword arguments:

* ``{"sigmas": [...]}``: VE sigmas, noisiest first, with the final level
  (0.0 when the chain lands clean) -- ``set_timesteps(sigmas=...)`` runs exactly
  ``len(sigmas) - 1`` steps on them;
* ``{"timesteps": [...]}``: integer training timesteps, strictly decreasing
  (each step then goes to the next listed timestep, the last to the clean end).

torch and diffusers are imported lazily (only :func:`set_chain` touches the
scheduler); pifskit's core never imports them.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .._validate import PifsError, check_choice
from ..chains import Chain
from ..schedules import DiscreteSchedule

__all__ = ["accepted_kwargs", "pipeline_kwargs", "scheduler_schedule", "set_chain"]


def accepted_kwargs(scheduler: Any) -> tuple[str, ...]:
    """Which of ("sigmas", "timesteps") ``scheduler.set_timesteps`` accepts, in pifskit's order of preference."""
    fn = getattr(scheduler, "set_timesteps", None)
    if fn is None:
        raise PifsError(f"{type(scheduler).__name__} has no set_timesteps(); not a diffusers scheduler")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - C-implemented callables
        return ()
    return tuple(k for k in ("sigmas", "timesteps") if k in params)


def scheduler_schedule(scheduler: Any) -> DiscreteSchedule:
    """The scheduler's training schedule (its ``alphas_cumprod``) as a pifskit :class:`DiscreteSchedule`."""
    ab = getattr(scheduler, "alphas_cumprod", None)
    if ab is None:
        raise PifsError(f"{type(scheduler).__name__} has no alphas_cumprod; cannot map levels to timesteps")
    ab = np.asarray(ab.detach().cpu().numpy() if hasattr(ab, "detach") else ab, dtype=np.float64)
    return DiscreteSchedule(ab, name=type(scheduler).__name__)


def _timesteps_for(chain: Chain, scheduler: Any) -> list[int]:
    if chain.timesteps is not None and np.allclose(chain.timesteps, np.round(chain.timesteps)):
        ts = np.round(np.asarray(chain.timesteps, dtype=np.float64)).astype(np.int64)
    else:
        from ..design.steps import timesteps_from_sigmas

        sig = chain.sigmas
        ts = timesteps_from_sigmas(scheduler_schedule(scheduler), sig[:chain.n_steps])
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
    accepted = accepted_kwargs(scheduler)
    if prefer is not None:
        check_choice(prefer, "prefer", ("sigmas", "timesteps"))
        if prefer in accepted:
            accepted = (prefer,) + tuple(k for k in accepted if k != prefer)
    if not accepted:
        raise PifsError(f"{type(scheduler).__name__}.set_timesteps accepts neither sigmas= nor timesteps=; "
                        "use e.g. EulerDiscreteScheduler (sigmas) or DDPMScheduler / DPMSolverMultistepScheduler "
                        "(timesteps) built from the same config (Scheduler.from_config(pipe.scheduler.config))")
    if accepted[0] == "sigmas":
        if chain.starts_from_noise:
            raise PifsError("the chain starts from pure noise (sigma = inf); diffusers needs a finite sigma_max")
        return {"sigmas": [float(s) for s in chain.sigmas]}
    return {"timesteps": _timesteps_for(chain, scheduler)}


def set_chain(scheduler: Any, chain: Chain, device: Any = None, prefer: str | None = None) -> dict[str, list]:
    """Call ``scheduler.set_timesteps(**pipeline_kwargs(chain, scheduler), device=device)``; returns the kwargs."""
    kw = pipeline_kwargs(chain, scheduler, prefer)
    scheduler.set_timesteps(device=device, **kw)
    return kw
