"""The chain a user asks for, from plain values: a schedule (or a diffusers scheduler config), a step count and
spacing, or explicit timesteps / sigmas. Every CLI command resolves its chain here."""

from __future__ import annotations

from ._validate import PifsError
from .chains import Chain, make_chain
from .scheduler_config import chain_from_config, load_scheduler_config
from .schedules import DiscreteSchedule, Schedule, get_schedule


def resolve_chain(schedule: Schedule | str | None, steps: int, spacing: str | None = None, timesteps=None,
                  sigmas=None, config=None) -> Chain:
    """The chain a user asks for, from plain values (what every CLI command calls).

    ``schedule``: a :class:`Schedule` or a zoo name (``get_schedule``); ``config``: a diffusers
    ``scheduler_config.json`` (path, folder or dict; its schedule is used when ``schedule`` is None).
    Explicit ``timesteps`` (training timesteps, noisiest first; needs a discrete schedule) or ``sigmas``
    (VE sigmas, noisiest first) win over ``steps``/``spacing``; otherwise the config's
    ``set_timesteps(steps)`` rule (``spacing`` overrides it), else ``make_chain(schedule, steps, spacing
    or 'trailing')``. Mapped or approximated requests are explained in ``chain.meta['notices']``.
    """
    cfg: dict = {}
    if config is not None:
        cfg_schedule, cfg = load_scheduler_config(config)
        schedule = cfg_schedule if schedule is None else schedule
    if schedule is None:
        raise PifsError("give a schedule or a scheduler config")
    if isinstance(schedule, str):
        schedule = get_schedule(schedule)
    if timesteps is not None and sigmas is not None:
        raise PifsError("give either timesteps or sigmas, not both")
    if timesteps is not None:
        return Chain.from_timesteps(schedule, timesteps, set_alpha_to_one=cfg.get("set_alpha_to_one", True))
    if sigmas is not None:
        return Chain.from_sigmas(sigmas, schedule if isinstance(schedule, DiscreteSchedule) else None)
    if cfg:
        return chain_from_config(schedule, cfg, steps, spacing=spacing)
    return make_chain(schedule, steps, spacing or "trailing")
