"""Import of a diffusers ``scheduler_config.json`` (no diffusers import needed).

Reproduces diffusers' betas, alphas_cumprod and ``set_timesteps`` levels in the same float32 arithmetic;
every field is honoured as diffusers honours it, known not to change the noise levels, or rejected by
name. What each scheduler family computes: docs/core.md#scheduler-configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._json import read_json_object
from ._validate import PifsError, check_choice, check_positive_int
from .parameterization import normalize_prediction
from .chains import Chain, diffusers_timesteps, karras_sigmas, make_chain
from .schedules import DiscreteSchedule, RectifiedFlowSchedule, Schedule, beta_table, logsnr_from_sigma

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


#: fields some family's reader honours (diffusers ignores another class's fields, as from_config leaves them)
_READ_FIELDS = frozenset({
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr",
    "prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one", "sigma_min", "sigma_max",
    "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "final_sigmas_type", "interpolation_type",
    "timestep_type", "lambda_min_clipped", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
    "base_image_seq_len", "max_image_seq_len",
})
#: fields that shape the update or post-process the output, never the noise levels a chain visits
_NEUTRAL_FIELDS = frozenset({
    "_class_name", "_diffusers_version", "_use_default_values", "clip_sample", "clip_sample_range",
    "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "variance_type", "skip_prk_steps",
    "solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final", "predict_x0",
    "solver_p", "disable_corrector", "s_churn", "s_tmin", "s_tmax", "s_noise", "eta",
    # read only together with a switch that is refused when on (use_flow_sigmas, use_dynamic_shifting)
    "flow_shift", "time_shift_type",
})
_BOOL_FIELDS = ("rescale_betas_zero_snr", "set_alpha_to_one", "use_karras_sigmas", "use_exponential_sigmas",
                "use_beta_sigmas", "use_dynamic_shifting", "clip_sample", "thresholding")
_FLOAT_FIELDS = ("beta_start", "beta_end", "sigma_min", "sigma_max", "shift", "base_shift", "max_shift",
                 "lambda_min_clipped")
_STRING_CHOICES = {
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "final_sigmas_type": ("zero", "sigma_min"),
    "interpolation_type": ("linear",),
    "timestep_type": ("discrete", "continuous"),
}


def _check_fields(raw: dict, cls: str) -> None:
    """Reject, by name, a field that would change the noise levels but that this reader does not reproduce,
    and fields of the wrong type (a string where diffusers needs a number, ...)."""
    for key, val in raw.items():
        if key not in _READ_FIELDS | _NEUTRAL_FIELDS and val is not None and val is not False:
            raise PifsError(f"config field {key!r} = {val!r} is not reproduced by pifskit for {cls}; "
                            f"remove it or use a supported scheduler class")
    for key in _BOOL_FIELDS:
        if key in raw and raw[key] is not None and not isinstance(raw[key], bool):
            raise PifsError(f"config field {key!r} must be true or false, got {raw[key]!r}")
    for key, v in ((k, raw.get(k)) for k in _FLOAT_FIELDS if raw.get(k) is not None):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PifsError(f"config field {key!r} must be a number, got {v!r}")
        if key != "lambda_min_clipped" and not np.isfinite(v):
            raise PifsError(f"config field {key!r} must be finite, got {v!r}")
    for key, choices in _STRING_CHOICES.items():
        if key in raw and raw[key] is not None:
            if key == "interpolation_type" and raw[key] == "log_linear":
                raise PifsError("config field 'interpolation_type' = 'log_linear' is not reproduced by pifskit "
                                "(diffusers then builds N + 1 noisy sigmas for N timesteps); use 'linear'")
            check_choice(str(raw[key]), key, choices)
    if "prediction_type" in raw:
        normalize_prediction(str(raw["prediction_type"]))
    if sum(bool(raw.get(k)) for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")) > 1:
        raise PifsError("only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas may be true")
    lo, hi = raw.get("sigma_min"), raw.get("sigma_max")
    if (lo is not None and lo <= 0) or (hi is not None and hi <= 0) or (lo is not None and hi is not None
                                                                        and lo >= hi):
        raise PifsError(f"config needs 0 < sigma_min < sigma_max, got sigma_min={lo!r}, sigma_max={hi!r}")
    if raw.get("trained_betas") is None and raw.get("beta_schedule", "linear") in ("linear", "scaled_linear"):
        defaults = {**_DEFAULTS, **_CLASS_DEFAULTS.get(cls, {})}
        b0, b1 = raw.get("beta_start", defaults["beta_start"]), raw.get("beta_end", defaults["beta_end"])
        if not (0 < b0 < b1 <= 1):
            raise PifsError(f"config needs 0 < beta_start < beta_end <= 1, got beta_start={b0!r}, beta_end={b1!r}")


#: where a class's own defaults differ from ``_DEFAULTS`` (checked against diffusers in the tests)
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    **{c: {"timestep_spacing": "linspace"} for c in EULER_FAMILY + MULTISTEP_FAMILY},
    "HeunDiscreteScheduler": {"timestep_spacing": "linspace", "beta_start": 0.00085, "beta_end": 0.012},
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
        betas = beta_table(kind, T, float(cfg["beta_start"]), float(cfg["beta_end"]))
    if not np.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
        raise PifsError("betas must be finite and in (0, 1]")
    if cfg.get("rescale_betas_zero_snr"):
        betas = rescale_zero_terminal_snr(betas)
    return betas


def schedule_from_config(cfg: dict) -> Schedule:
    """The training schedule a config describes (DiscreteSchedule, or RectifiedFlowSchedule for flow matching).

    Euler-family and multistep schedulers with ``rescale_betas_zero_snr`` set the last alpha_bar to
    2^-24 (not 0) as diffusers does, so their first sigma is finite (4096).
    """
    cls = cfg.get("_class_name", "DDIMScheduler")
    if cls in FLOW_FAMILY:
        if cfg.get("use_dynamic_shifting"):
            raise PifsError("use_dynamic_shifting (resolution-dependent mu) is not supported; "
                            "set a fixed 'shift' in the config")
        return RectifiedFlowSchedule(float(cfg.get("shift", 1.0)))
    betas = betas_from_config(cfg)
    ab = _cumprod32(np.float32(1.0) - betas).astype(np.float64)
    if cfg.get("rescale_betas_zero_snr") and cls in EULER_FAMILY + MULTISTEP_FAMILY:
        ab[-1] = 2.0**-24
    return DiscreteSchedule(ab, name=f"{cls}:{cfg.get('beta_schedule', 'trained')}",
                            prediction_type=str(cfg.get("prediction_type", "epsilon")), config=dict(cfg))


def find_scheduler_config(p: Path) -> Path:
    """The scheduler_config.json a path names: the file itself, or inside a model/scheduler folder."""
    if p.is_dir():
        for cand in (p / "scheduler_config.json", p / "scheduler" / "scheduler_config.json"):
            if cand.is_file():
                return cand
        raise PifsError(f"{p} is a folder without scheduler_config.json (or scheduler/scheduler_config.json); "
                        "pass the config file or a diffusers model folder")
    if not p.exists():
        raise PifsError(f"diffusers config not found: {p}")
    return p


def load_scheduler_config(path_or_dict: str | Path | dict) -> tuple[Schedule, dict]:
    """Read a scheduler_config.json (or a dict): returns (schedule, config with diffusers' defaults filled in).

    A folder is searched for ``scheduler_config.json`` and ``scheduler/scheduler_config.json`` (a saved
    pipeline). Every field either changes what pifskit computes exactly as in diffusers, or is rejected
    by name (see ``_READ_FIELDS`` / ``_NEUTRAL_FIELDS``).
    """
    if isinstance(path_or_dict, dict):
        raw = dict(path_or_dict)
    else:
        raw = read_json_object(find_scheduler_config(Path(path_or_dict)), "diffusers config ")
    cls = raw.get("_class_name", "DDIMScheduler")
    supported = DDIM_FAMILY + EULER_FAMILY + FLOW_FAMILY + MULTISTEP_FAMILY
    if cls not in supported:
        raise PifsError(f"unsupported scheduler class {cls!r}; accepted: {', '.join(supported)}")
    for key in ("num_train_timesteps", "steps_offset"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool)):
            raise PifsError(f"config field {key!r} must be an integer, got {raw[key]!r}")
    _check_fields(raw, cls)
    cfg = {**_DEFAULTS, **_CLASS_DEFAULTS.get(cls, {}), **raw, "_class_name": cls}
    if "set_alpha_to_one" not in raw:
        cfg["set_alpha_to_one"] = cls != "PNDMScheduler"
    return schedule_from_config(cfg), cfg


def _beta_sigmas(sigma_min: float, sigma_max: float, n: int, alpha: float = 0.6, beta: float = 0.6) -> np.ndarray:
    """diffusers' ``use_beta_sigmas`` (Lee et al. 2024): sigma_min + ppf(1 - i/(n-1); a, b) (sigma_max - sigma_min)."""
    from scipy.stats import beta as beta_dist

    return sigma_min + beta_dist.ppf(1.0 - np.linspace(0, 1, n), alpha, beta) * (sigma_max - sigma_min)


def _euler_chain(sched: DiscreteSchedule, cfg: dict, steps: int) -> Chain:
    """Euler-family ``set_timesteps(steps)``: spaced timesteps, sigmas interpolated in the float32 table;
    with ``use_karras/exponential/beta_sigmas`` the N sigmas run from ``sigma_max`` to ``sigma_min`` (the
    config's, else the table's ends) and the timesteps follow by log-sigma interpolation; the last level
    is 0 or, with ``final_sigmas_type = sigma_min``, the table's first sigma."""
    T = sched.num_train_timesteps
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].copy()
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].copy().astype(np.float32) + cfg["steps_offset"]
    else:
        ts = (np.arange(T, 0, -T / steps)).round().copy().astype(np.float32) - 1
    table = sched.sigmas_table.astype(np.float32)
    sig = np.interp(ts, np.arange(T), table)
    kind = next((k for k in ("karras", "exponential", "beta") if cfg.get(f"use_{k}_sigmas")), None)
    if kind is not None:
        lo = float(sig[-1]) if cfg.get("sigma_min") is None else float(cfg["sigma_min"])
        hi = float(sig[0]) if cfg.get("sigma_max") is None else float(cfg["sigma_max"])
        if kind == "karras":
            sig = karras_sigmas(lo, hi, steps) if steps > 1 else np.array([hi])
        elif kind == "exponential":
            sig = np.exp(np.linspace(np.log(hi), np.log(lo), steps))
        else:
            sig = _beta_sigmas(lo, hi, steps)
        ts = sched.timestep_of_sigma(sig)
    last = float(table[0]) if cfg.get("final_sigmas_type", "zero") == "sigma_min" else 0.0
    sig = np.concatenate([np.asarray(sig, dtype=np.float32), [np.float32(last)]]).astype(np.float64)
    meta: dict[str, Any] = {}
    if cfg.get("timestep_type") == "continuous" and normalize_prediction(str(cfg["prediction_type"])) == "v_prediction":
        ts = 0.25 * np.log(sig[:-1].astype(np.float32))  # diffusers' EDM-style c_noise for this combination
        meta["timestep_type"] = "continuous (0.25 log sigma)"
    if (np.diff(sig) >= 0).any():
        raise PifsError(f"{cfg['_class_name']} with these settings gives repeated sigmas at {steps} steps; "
                        "use fewer steps")
    return Chain(logsnr_from_sigma(sig), timesteps=np.asarray(ts, dtype=np.float64),
                 name=f"{cfg['_class_name']}:{kind or spacing}-{steps}", meta=meta)


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
    l = RectifiedFlowSchedule().logsnr(sig)  # flow sigma t' -> VP logSNR 2 log((1 - t') / t')
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
    if cls == "PNDMScheduler":
        chain.meta["notices"] = ["PNDMScheduler is analysed as DDIM over the same timesteps (PNDM's "
                                 "pseudo-numerical multistep update is not modelled)"]
    return chain


def config_levels(schedule: Schedule, cfg: dict, steps: int) -> dict[str, np.ndarray]:
    """``{"config": sigmas}``: the levels the config's own ``set_timesteps(steps)`` runs (its spacing, offset
    and final alpha), when that chain has ``steps`` steps and lands clean; else ``{}`` (also for no config)."""
    if not cfg:
        return {}
    ch = chain_from_config(schedule, cfg, steps)
    return {"config": ch.sigmas} if ch.lands_clean and ch.n_steps == steps else {}
