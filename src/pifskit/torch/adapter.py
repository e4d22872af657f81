"""Wrap any ``model(x, t, **cond)`` into the denoiser D_t(x) and the DDIM step map of a pifskit chain.

Geometry in VP coordinates x = a x0 + s e; the model sees its input scaling (``input_space`` vp / ve / flow)
and time variable (``TIMESTEP_CONVENTIONS``); its output becomes D = c_skip x + c_out F
(:func:`pifskit.parameterization.x0_scalings`). Step i: F_i(x) = c_i x + d_i D_i(x)
(:func:`pifskit.geometry.step_coefficients`). Conventions: docs/torch.md#adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validate import PifsError, check_choice
from ..chains import Chain
from ..geometry import contraction_threshold, step_coefficients
from ..parameterization import INPUT_SPACES, PREDICTION_TYPES, input_scale, normalize_prediction, x0_scalings
from ..schedules import Schedule

TIMESTEP_CONVENTIONS = ("discrete", "continuous", "sigma", "logsnr", "flow")
#: closed-form model times of the level l: VE sigma = exp(-l / 2), l itself, flow t_f = s / (a + s)
_TIME_OF_LOGSNR = {"sigma": lambda l: np.exp(-0.5 * l), "logsnr": lambda l: l.copy(),
                   "flow": lambda l: 1.0 / (1.0 + np.exp(0.5 * l))}


def model_output_tensor(out: Any) -> torch.Tensor:
    """The tensor inside a model output: ``.sample`` (diffusers), first element of a tuple, or the tensor."""
    if hasattr(out, "sample") and isinstance(out.sample, torch.Tensor):
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and isinstance(out.get("sample"), torch.Tensor):
        return out["sample"]
    if isinstance(out, torch.Tensor):
        return out
    raise PifsError(f"model returned {type(out).__name__}; expected a tensor, a tuple, or an object with .sample")


class ModelDenoiser(nn.Module):
    """D(x, logsnr, timestep) = c_skip x + c_out model(c_in x, t, **cond): the x0 estimate in VP coordinates.

    ``logsnr``: a float or (B,) levels; ``timestep`` (same shape) for the ``discrete`` convention;
    ``sample_shape`` (C, H, W), when given, is checked against the input.
    """

    def __init__(self, model: Callable, prediction: str = "epsilon", timestep_convention: str = "discrete", *,
                 schedule: Schedule | None = None, input_space: str | None = None, timestep_scale: float = 1.0,
                 sample_shape: tuple[int, ...] | None = None, cond: dict | None = None,
                 timestep_fn: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__()
        self.model = model
        self.prediction = normalize_prediction(prediction)
        self.timestep_convention = check_choice(timestep_convention, "timestep convention", TIMESTEP_CONVENTIONS)
        if input_space is None:
            input_space = "flow" if self.prediction == "flow" else "vp"
        self.input_space = check_choice(input_space, "input space", INPUT_SPACES)
        if self.prediction == "v_prediction" and self.input_space != "vp":
            raise PifsError("v_prediction is defined in VP space; use input_space='vp'")
        if self.prediction == "flow" and self.input_space != "flow":
            raise PifsError("flow prediction is defined in flow space; use input_space='flow'")
        if self.timestep_convention == "continuous" and schedule is None and timestep_fn is None:
            raise PifsError("timestep convention 'continuous' needs the model's schedule (t = schedule.t_of_logsnr(l))")
        self.schedule = schedule
        self.timestep_scale = float(timestep_scale)
        self.sample_shape = None if sample_shape is None else tuple(int(v) for v in sample_shape)
        self.cond = dict(cond or {})
        self.timestep_fn = timestep_fn

    def model_time(self, logsnr: np.ndarray, timestep: np.ndarray | None = None) -> np.ndarray:
        """The model's ``t`` for the given levels (numpy, float64)."""
        l = np.asarray(logsnr, dtype=np.float64)
        if self.timestep_fn is not None:
            t = np.asarray(self.timestep_fn(l), dtype=np.float64)
        elif self.timestep_convention == "discrete":
            if timestep is None:
                raise PifsError("timestep convention 'discrete' needs a chain with training timesteps "
                                "(Chain.from_timesteps / a discrete schedule); this chain has none")
            t = np.asarray(timestep, dtype=np.float64)
        elif self.timestep_convention == "continuous":
            t = np.asarray(self.schedule.t_of_logsnr(l), dtype=np.float64)
        else:
            with np.errstate(over="ignore"):
                t = _TIME_OF_LOGSNR[self.timestep_convention](l)
        return t * self.timestep_scale

    def forward(self, x: torch.Tensor, logsnr, timestep=None) -> torch.Tensor:
        if self.sample_shape is not None and tuple(x.shape[1:]) != self.sample_shape:
            raise PifsError(f"input has sample shape {tuple(x.shape[1:])}, the model expects {self.sample_shape}")
        B = x.shape[0]
        l_np = np.array(np.broadcast_to(np.asarray(logsnr, dtype=np.float64), (B,)))
        ts_np = None if timestep is None else np.array(np.broadcast_to(np.asarray(timestep, dtype=np.float64), (B,)))
        t_model = torch.as_tensor(self.model_time(l_np, ts_np), dtype=x.dtype, device=x.device)
        l64 = torch.as_tensor(l_np, dtype=torch.float64)
        a64, s64 = torch.sigmoid(l64).sqrt(), torch.sigmoid(-l64).sqrt()  # exact at +-inf
        if (a64 == 0).any() and (self.input_space == "ve" or self.prediction == "epsilon"):
            raise PifsError(f"a{'n epsilon-prediction' if self.prediction == 'epsilon' else ' VE/EDM'} model has no "
                            "x0 estimate at pure noise (a = 0); use a chain that does not start from pure noise")
        shape = (B,) + (1,) * (x.dim() - 1)
        scalings = (input_scale(self.input_space, a64, s64), *x0_scalings(self.prediction, a64, s64))
        c_in, c_skip, c_out = (v.to(dtype=x.dtype, device=x.device).reshape(shape) for v in scalings)
        out = model_output_tensor(self.model(x * c_in, t_model, **self.cond))
        if out.shape != x.shape:
            raise PifsError(f"model output has shape {tuple(out.shape)}, expected the input shape {tuple(x.shape)}")
        return c_skip * x + c_out * out


class ChainDenoiser(nn.Module):
    """A denoiser bound to a chain: ``denoise(x, i)`` = D_i(x), ``step(x, i)`` = F_i(x) = c_i x + d_i D_i(x).

    ``i`` is an int or a (B,) integer tensor of step indices (per-sample steps).
    """

    def __init__(self, denoiser: ModelDenoiser | Callable, chain: Chain):
        super().__init__()
        if not isinstance(chain, Chain):
            raise PifsError("chain must be a pifskit Chain")
        self.denoiser = denoiser
        self.chain = chain
        conv = getattr(denoiser, "timestep_convention", None)
        if conv == "discrete" and chain.timesteps is None and getattr(denoiser, "timestep_fn", None) is None:
            raise PifsError("the model uses discrete training timesteps but the chain has none; build the chain "
                            "from a discrete schedule (e.g. --schedule sd/ddpm) or Chain.from_timesteps")
        self.c, self.d_coef = step_coefficients(chain)  # d_coef: DDIM coefficient of D_i (not a dimension)
        self.lstar = contraction_threshold(chain)
        self.n_steps = chain.n_steps

    @staticmethod
    def _index(i) -> np.ndarray:
        return np.asarray(i.detach().cpu().numpy() if isinstance(i, torch.Tensor) else i)

    def denoise(self, x: torch.Tensor, i) -> torch.Tensor:
        idx = self._index(i)
        if (idx < 0).any() or (idx >= self.n_steps).any():
            raise PifsError(f"step index must lie in [0, {self.n_steps - 1}]")
        ts = None if self.chain.timesteps is None else np.asarray(self.chain.timesteps, dtype=np.float64)[idx]
        return self.denoiser(x, self.chain.logsnr[idx], ts)

    def coefficients(self, i, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_i, d_i) as tensors shaped to broadcast against ``like``."""
        idx = self._index(i)
        shape = (-1,) + (1,) * (like.dim() - 1) if idx.ndim else ()
        return tuple(torch.as_tensor(v[idx], dtype=like.dtype, device=like.device).reshape(shape)
                     for v in (self.c, self.d_coef))

    def step(self, x: torch.Tensor, i, clip_x0: float | None = None) -> torch.Tensor:
        """F_i(x) = c_i x + d_i D_i(x); ``clip_x0`` clamps D_i to [-clip_x0, clip_x0] (diffusers' clip_sample)."""
        c, d = self.coefficients(i, x)
        x0 = self.denoise(x, i)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        return c * x + d * x0

    def forward(self, x: torch.Tensor, i) -> torch.Tensor:
        return self.step(x, i)

    def sample(self, x_init: torch.Tensor, return_trajectory: bool = False, clip_x0: float | None = None):
        """Run the whole chain from ``x_init`` (level 0) with :func:`rollout`; optionally all N + 1 states."""
        xs = rollout(self, x_init, clip_x0=clip_x0)
        return xs if return_trajectory else xs[-1]


@torch.no_grad()
def rollout(model: ChainDenoiser, x: torch.Tensor, chain: Chain | None = None, callback: Callable | None = None,
            *, clip_x0: float | None = None) -> torch.Tensor:
    """The one DDIM rollout x_{i+1} = c_i x_i + d_i clamp(D_i(x_i), +-clip_x0) over ``model.chain`` (``chain``, if
    given, must be it); ``callback(i, x_{i+1}, x0_i)`` after each step. Returns the states (N + 1, B, ...)."""
    if chain is not None and chain is not model.chain:
        raise PifsError("rollout: the chain differs from the ChainDenoiser's chain")
    xs = [x]
    for i in range(model.n_steps):
        c, d = model.coefficients(i, x)
        x0 = model.denoise(x, i)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        x = c * x + d * x0
        xs.append(x)
        if callback is not None:
            callback(i, x, x0)
    return torch.stack(xs)


class GaussianDenoiser(nn.Module):
    """The exact optimal denoiser of N(0, U diag(lam) U^T) data as an x0-predicting model of (x, logsnr):
    D(x) = U diag(a lam / (a^2 lam + s^2)) U^T x (``basis`` U, None = identity; ``shape``: sample shape, default
    (d,)). Use with ``ModelDenoiser(g, 'sample', 'logsnr')``."""

    def __init__(self, eigenvalues, basis=None, shape: tuple[int, ...] | None = None,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        lam = torch.as_tensor(np.array(eigenvalues, dtype=np.float64), dtype=dtype)
        if lam.dim() != 1 or (lam < 0).any():
            raise PifsError("eigenvalues must be a 1-d array of values >= 0")
        d = lam.numel()
        self.shape = (d,) if shape is None else tuple(int(v) for v in shape)
        if int(np.prod(self.shape)) != d:
            raise PifsError(f"shape {self.shape} does not hold {d} values")
        self.register_buffer("lam", lam)
        if basis is not None:
            U = torch.as_tensor(np.array(basis, dtype=np.float64), dtype=dtype)
            if U.shape != (d, d):
                raise PifsError(f"basis must be {d} x {d}")
            self.register_buffer("basis", U)
        else:
            self.basis = None

    def forward(self, x: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        flat = x.reshape(B, -1)
        l = torch.as_tensor(logsnr, dtype=torch.float64, device=x.device).reshape(-1)
        l = l.expand(B) if l.numel() == 1 else l
        a2, s2 = torch.sigmoid(l)[:, None], torch.sigmoid(-l)[:, None]
        lam = self.lam.to(torch.float64)[None]
        gain = (a2.sqrt() * lam / (a2 * lam + s2)).to(x.dtype)
        if self.basis is None:
            return (flat * gain).reshape(x.shape)
        U = self.basis.to(x.dtype)
        return (((flat @ U) * gain) @ U.T).reshape(x.shape)
