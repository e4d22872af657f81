"""Import of a diffusers ``scheduler_config.json`` (no diffusers import needed).

Reproduces what diffusers computes, in the same float32 arithmetic (to
float32 precision: torch's vectorised float32 ``linspace`` can differ from
numpy's by one ulp):

* betas: ``linear`` = linspace(beta_start, beta_end, T); ``scaled_linear`` =
  linspace(sqrt(beta_start), sqrt(beta_end), T)^2; ``squaredcos_cap_v2`` =
  min(1 - f(t2)/f(t1), 0.999) with f(t) = cos((t + 0.008)/1.008 pi/2)^2;
  ``trained_betas`` verbatim; optional ``rescale_betas_zero_snr`` (Lin et al.
  2024, Algorithm 1); alphas_cumprod = cumprod(1 - betas) in float32.
* flow matching (``FlowMatchEulerDiscreteScheduler``): sigmas = t' =
  shift t / (1 + (shift - 1) t), mapped to VP as l = 2 log((1 - t')/t').
* the inference chain of ``set_timesteps`` for the DDIM family (DDIM, DDPM,
  PNDM: integer timesteps by ``timestep_spacing``, last step to alpha_bar = 1
  iff ``set_alpha_to_one``), the Euler family (Euler, Euler ancestral, Heun,
  LMS: sigmas interpolated linearly at the spaced timesteps, then 0) and flow
  matching.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import PifsError, check_choice, check_positive_int
from .chains import Chain, diffusers_timesteps, make_chain
from .schedules import DiscreteSchedule, RectifiedFlowSchedule, Schedule, logsnr_from_sigma

__all__ = ["load_scheduler_config", "schedule_from_config", "chain_from_config", "betas_from_config",
           "rescale_zero_terminal_snr", "DDIM_FAMILY", "EULER_FAMILY", "FLOW_FAMILY",
           "MULTISTEP_FAMILY"]

DDIM_FAMILY = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler")
EULER_FAMILY = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                "LMSDiscreteScheduler")
FLOW_FAMILY = ("FlowMatchEulerDiscreteScheduler",)
#: multistep solvers: integer timesteps by spacing over N + 1 points (linspace / leading), sigmas
#: interpolated, final sigma per ``final_sigmas_type``
MULTISTEP_FAMILY = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "rescale_betas_zero_snr": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 0,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "use_karras_sigmas": False,
}


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _cumprod32(x: np.ndarray) -> np.ndarray:
    """float32 cumprod as torch computes it on the CPU (float64 accumulator, float32 outputs)."""
    return np.cumprod(np.asarray(x, dtype=np.float64)).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift/scale sqrt(alpha_bar) so the last level is 0 and the first unchanged (float32, as diffusers)."""
    betas = _f32(betas)
    ab_sqrt = np.sqrt(_cumprod32(np.float32(1.0) - betas))
    first, last = ab_sqrt[0].copy(), ab_sqrt[-1].copy()
    ab_sqrt = ab_sqrt - last
    ab_sqrt = ab_sqrt * (first / (first - last))
    ab = ab_sqrt**2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def betas_from_config(cfg: dict) -> np.ndarray:
    """float32 betas exactly as diffusers builds them from the config."""
    T = check_positive_int(cfg["num_train_timesteps"], "num_train_timesteps")
    if cfg.get("trained_betas") is not None:
        betas = _f32(cfg["trained_betas"]).ravel()
        if betas.size != T:
            raise PifsError(f"trained_betas has {betas.size} values but num_train_timesteps is {T}")
    else:
        kind = check_choice(str(cfg["beta_schedule"]), "beta_schedule", BETA_SCHEDULES)
        b0, b1 = float(cfg["beta_start"]), float(cfg["beta_end"])
        if kind == "linear":
            betas = np.linspace(b0, b1, T, dtype=np.float32)
        elif kind == "scaled_linear":
            betas = np.linspace(b0**0.5, b1**0.5, T, dtype=np.float32) ** 2
        else:
            i = np.arange(T, dtype=np.float64)
            f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
            betas = _f32(np.minimum(1 - f((i + 1) / T) / f(i / T), 0.999))
    if not np.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
        raise PifsError("betas must be finite and in (0, 1]")
    if cfg.get("rescale_betas_zero_snr"):
        betas = rescale_zero_terminal_snr(betas)
    return betas


def schedule_from_config(cfg: dict) -> Schedule:
    """The training schedule a config describes (DiscreteSchedule, or RectifiedFlowSchedule for flow matching)."""
    cls = cfg.get("_class_name", "DDIMScheduler")
    if cls in FLOW_FAMILY:
        if cfg.get("use_dynamic_shifting"):
            raise PifsError("use_dynamic_shifting (resolution-dependent mu) is not supported; "
                            "set a fixed 'shift' in the config")
        return RectifiedFlowSchedule(float(cfg.get("shift", 1.0)))
    betas = betas_from_config(cfg)
    ab = _cumprod32(np.float32(1.0) - betas).astype(np.float64)
    return DiscreteSchedule(ab, name=f"{cls}:{cfg.get('beta_schedule', 'trained')}",
                            prediction_type=str(cfg.get("prediction_type", "epsilon")), config=dict(cfg))


def load_scheduler_config(path_or_dict: str | Path | dict) -> tuple[Schedule, dict]:
    """Read a scheduler_config.json (or a dict): returns (schedule, config with diffusers' defaults filled in)."""
    if isinstance(path_or_dict, dict):
        raw = dict(path_or_dict)
    else:
        p = Path(path_or_dict)
        if not p.is_file():
            raise PifsError(f"diffusers config not found: {p}")
        try:
            raw = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PifsError(f"malformed diffusers config {p}: {exc}") from None
        if not isinstance(raw, dict):
            raise PifsError(f"malformed diffusers config {p}: top level is not an object")
    cls = raw.get("_class_name", "DDIMScheduler")
    supported = DDIM_FAMILY + EULER_FAMILY + FLOW_FAMILY + MULTISTEP_FAMILY
    if cls not in supported:
        raise PifsError(f"unsupported scheduler class {cls!r}; accepted: {', '.join(supported)}")
    cfg = {**_DEFAULTS, **raw, "_class_name": cls}
    if "set_alpha_to_one" not in raw:
        cfg["set_alpha_to_one"] = cls != "PNDMScheduler"
    for key in ("num_train_timesteps", "steps_offset"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            raise PifsError(f"config key {key!r} must be an integer, got {cfg[key]!r}")
    check_choice(str(cfg["timestep_spacing"]), "timestep_spacing", ("leading", "trailing", "linspace"))
    return schedule_from_config(cfg), cfg


def _euler_chain(sched: DiscreteSchedule, cfg: dict, steps: int) -> Chain:
    T = sched.num_train_timesteps
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].copy()
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].copy().astype(np.float32) + cfg["steps_offset"]
    else:
        ts = (np.arange(T, 0, -T / steps)).round().copy().astype(np.float32) - 1
    table = sched.sigmas_table
    if cfg.get("use_karras_sigmas"):
        return make_chain(sched, steps, "karras")
    sig = np.interp(ts, np.arange(T), table)
    return Chain(logsnr_from_sigma(np.concatenate([sig, [0.0]])), timesteps=ts.astype(np.float64),
                 name=f"{cfg['_class_name']}:{spacing}-{steps}")


def _multistep_chain(sched: DiscreteSchedule, cfg: dict, steps: int) -> Chain:
    """DPMSolverMultistep / UniPC ``set_timesteps(steps)``: spacing over N + 1 points for linspace and
    leading (DPM-Solver clips at ``lambda_min_clipped``), final sigma 0 or sigma_min."""
    if cfg.get("use_karras_sigmas"):
        return make_chain(sched, steps, "karras")
    T = sched.num_train_timesteps
    last = T
    lmin = cfg.get("lambda_min_clipped", -np.inf)
    if cfg["_class_name"] == "DPMSolverMultistepScheduler" and lmin is not None and np.isfinite(float(lmin)):
        ab = sched.alphas_cumprod.astype(np.float32)
        lam = 0.5 * np.log(ab) - 0.5 * np.log1p(-ab)
        last = T - int(np.searchsorted(lam[::-1], float(lmin)))
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, steps + 1) * (last // (steps + 1))).round()[::-1][:-1].astype(np.int64)
        ts = ts + int(cfg["steps_offset"])
    else:
        ts = np.arange(last, 0, -T / steps).round().astype(np.int64) - 1
    zero = cfg.get("final_sigmas_type", "zero") == "zero"
    return Chain.from_timesteps(sched, ts, set_alpha_to_one=zero, name=f"{cfg['_class_name']}:{spacing}-{steps}")


def _flow_chain(cfg: dict, steps: int) -> Chain:
    T = int(cfg["num_train_timesteps"])
    shift = np.float32(cfg.get("shift", 1.0))
    base = np.linspace(1, T, T, dtype=np.float32)[::-1] / np.float32(T)
    shifted = shift * base / (1 + (shift - 1) * base)
    smax, smin = float(shifted[0]), float(shifted[-1])
    ts = np.linspace(smax * T, smin * T, steps, dtype=np.float64).astype(np.float32)
    s = ts / np.float32(T)
    s = shift * s / (1 + (shift - 1) * s)
    sig = np.concatenate([s.astype(np.float64), [0.0]])
    # flow sigma t' -> VP logSNR 2 log((1 - t') / t')
    with np.errstate(divide="ignore"):
        l = 2.0 * (np.log1p(-sig) - np.log(sig))
    return Chain(l, timesteps=(s * np.float32(T)).astype(np.float64), name=f"flow-match-{steps}")


def chain_from_config(schedule: Schedule, cfg: dict, steps: int, spacing: str | None = None) -> Chain:
    """The inference chain diffusers' ``set_timesteps(steps)`` gives for this config.

    ``spacing`` overrides the config's rule with any pifskit spacing
    (karras, logsnr, ays-*, ...), on the config's training schedule.
    """
    cls = cfg["_class_name"]
    if spacing is not None and spacing not in ("leading", "trailing", "linspace"):
        return make_chain(schedule, steps, spacing)
    if spacing is not None:
        cfg = {**cfg, "timestep_spacing": spacing}
    if cls in FLOW_FAMILY:
        check_positive_int(steps, "steps")
        return _flow_chain(cfg, steps)
    assert isinstance(schedule, DiscreteSchedule)
    T = schedule.num_train_timesteps
    check_positive_int(steps, "steps", maximum=T)
    if cls in EULER_FAMILY:
        return _euler_chain(schedule, cfg, steps)
    if cls in MULTISTEP_FAMILY:
        return _multistep_chain(schedule, cfg, steps)
    ts = diffusers_timesteps(T, steps, cfg["timestep_spacing"], cfg["steps_offset"])
    if ts.max() > T - 1:
        raise PifsError(f"steps_offset {cfg['steps_offset']} pushes a timestep past T - 1 = {T - 1}")
    chain = Chain.from_timesteps(schedule, ts, set_alpha_to_one=bool(cfg["set_alpha_to_one"]),
                                 name=f"{cls}:{cfg['timestep_spacing']}-{steps}")
    return chain
