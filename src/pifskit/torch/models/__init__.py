"""Small denoisers :class:`DiT` and :class:`UNet`; ``build_model(config_dict)`` rebuilds either (``arch`` key)."""

from __future__ import annotations

from ..._validate import PifsError, check_choice
from .common import (PREDICTIONS, count_parameters, normalize_prediction, prediction_to_x0,
                     timestep_embedding, training_target)
from .dit import DiT, DiTConfig
from .unet import UNet, UNetConfig

ARCHS = {"dit": (DiTConfig, DiT), "unet": (UNetConfig, UNet)}


def make_config(config: dict):
    """A DiTConfig / UNetConfig from a dict with an ``arch`` key; unknown keys raise PifsError."""
    if not isinstance(config, dict) or "arch" not in config:
        raise PifsError("model config must be a dict with an 'arch' key ('dit' or 'unet')")
    arch = check_choice(config["arch"], "model architecture", tuple(ARCHS))
    cls = ARCHS[arch][0]
    try:
        return cls(**config)
    except TypeError as exc:
        raise PifsError(f"bad {arch} model config: {exc}") from None


def build_model(config: dict):
    """The model a config dict describes (fresh initialisation)."""
    cfg = make_config(config)
    return ARCHS[cfg.arch][1](cfg)


def default_config(arch: str, image_shape: tuple[int, int, int], prediction: str = "epsilon", **overrides) -> dict:
    """CPU-sized defaults for an image shape (C, H, W).

    DiT: patch 4 (patch 2 below 16 px), width 96, depth 4, 4 heads (~0.7 M parameters at 28 px).
    U-Net: channels 24 x (1, 2, 2) (x (1, 2) below 16 px), one ResBlock per level.
    """
    arch = check_choice(arch, "model architecture", tuple(ARCHS))
    C, H, W = image_shape
    if H != W:
        raise PifsError(f"models need square images, got {H}x{W}")
    if arch == "dit":
        patch = 2 if H < 16 else 4
        if H % patch:
            patch = 2 if H % 2 == 0 else 1
        cfg = dict(arch="dit", image_size=H, in_channels=C, patch_size=patch, prediction=prediction)
    else:
        mult = (1, 2, 2) if H % 4 == 0 and H >= 16 else ((1, 2) if H % 2 == 0 else (1,))
        cfg = dict(arch="unet", image_size=H, in_channels=C, channel_mult=list(mult), prediction=prediction)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(cfg).to_dict()
