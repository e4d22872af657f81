"""Training checkpoints: one ``torch.save`` dict (read with ``weights_only=True``), written atomically.

Keys: format, version, model_config, model_state, ema_state, optimizer_state, scaler_state, step, data,
hparams, image_shape, schedule, prediction, timestep_convention, num_train_timesteps, world_size.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .._validate import PifsError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "pifskit-checkpoint"
VERSION = 1
_REQUIRED = ("model_config", "model_state", "ema_state", "step", "hparams", "data", "image_shape", "schedule",
             "prediction")


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run directory (-> DIR/checkpoint.pt) or a checkpoint file."""
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file in ``path``'s directory, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format/version) atomically to ``path`` (a file or run directory)."""
    p = Path(path)
    p = p / CHECKPOINT_NAME if (p.is_dir() or p.suffix == "") else p
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write_bytes(p, lambda f: torch.save(payload, f))
    return p


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    """The exception's type and the first sentence of its first line, whole (or the type alone if too long)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    for end in (". ", ": "):
        cut = text.find(end)
        if 0 < cut < limit <= len(text):
            text = text[:cut]
    text = text.rstrip(".:; ")
    name = type(exc).__name__
    return f"{name}: {text}" if text and len(text) <= limit else name


def _names(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_weights(model: torch.nn.Module, state: dict, what: str = "checkpoint weights") -> None:
    """``model.load_state_dict(state)``; a mismatch raises PifsError naming the keys in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(extra)}"] if extra else []) \
        + ([f"shape {_names(shape, 2)}"] if shape else [])
    if parts:
        raise PifsError(f"{what} do not fit the model config stored with them ({'; '.join(parts)})")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise PifsError(f"{what} do not fit the model config stored with them ({_first_sentence(exc)})") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load and validate a pifskit checkpoint; a missing, truncated or foreign file raises PifsError."""
    p = checkpoint_path(path)
    if not p.is_file():
        raise PifsError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise PifsError(f"{p}: unreadable or corrupt checkpoint ({_first_sentence(exc)}); it may be truncated "
                        "(a copy or write that did not finish) or not a torch.save file") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise PifsError(f"{p}: not a pifskit training checkpoint")
    if ck.get("version") != VERSION:
        raise PifsError(f"{p}: checkpoint version {ck.get('version')} not supported (this pifskit reads {VERSION})")
    missing = [k for k in _REQUIRED if k not in ck]
    if missing:
        raise PifsError(f"{p}: checkpoint lacks {', '.join(missing)}")
    return ck


def load_checkpoint_model(path: str | os.PathLike, ema: bool = True, device: Any = "cpu"):
    """(model in eval mode, info) from a run directory or checkpoint file; ``ema``: the EMA weights (to sample
    from). The model takes training timesteps 0..T-1 (fractional allowed): timestep_convention 'discrete'."""
    from .models import build_model

    ck = load_checkpoint(path)
    model = build_model(dict(ck["model_config"]))
    state = ck["ema_state"] if ema else ck["model_state"]
    load_weights(model, state, f"{checkpoint_path(path)}: {'EMA' if ema else 'model'} weights")
    model.to(device).eval()
    info = {
        "prediction_type": ck["prediction"],
        "image_shape": tuple(int(v) for v in ck["image_shape"]),
        "schedule": ck["schedule"],
        "timestep_convention": "discrete",
        "num_train_timesteps": int(ck.get("num_train_timesteps", 1000)),
        "step": int(ck["step"]),
        "arch": ck["model_config"]["arch"],
        "model_config": dict(ck["model_config"]),
        "data": dict(ck["data"]),
        "hparams": dict(ck["hparams"]),
        "ema": bool(ema),
        "path": str(checkpoint_path(path)),
    }
    return model, info
