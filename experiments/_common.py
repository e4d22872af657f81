"""Shared helpers of the MNIST experiments: data split, held-out unweighted eps-MSE, sampling + quality."""

from __future__ import annotations

import numpy as np
import torch

from pifskit import get_schedule, make_chain
from pifskit.datasets import parse_data_spec
from pifskit.torch.checkpoint import load_checkpoint_model
from pifskit.torch.models.common import prediction_to_x0
from pifskit.torch.generate import ddim_sample



def load_split(data: str, holdout: float = 0.2, split_seed: int = 0):
    """(train, held-out) ImageDatasets of the fixed seeded split (images (N, 1, 28, 28) in [-1, 1])."""
    return parse_data_spec(data, holdout=holdout, split_seed=split_seed).load()


def train_schedule(info: dict):
    return get_schedule(info["schedule"])


@torch.no_grad()
def heldout_eps_mse(model, info: dict, images: np.ndarray, n: int = 1000, seed: int = 1234,
                    batch: int = 250) -> float:
    """Unweighted eps-prediction MSE on held-out images at uniformly drawn training timesteps
    (same images, timesteps and noise for every checkpoint: comparable across weightings)."""
    sch = train_schedule(info)
    ab = torch.as_tensor(np.asarray(sch.alphas_cumprod), dtype=torch.float64)
    T = len(ab)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(images[:n]).float()
    t = torch.randint(0, T, (len(x0),), generator=g)
    e = torch.randn(x0.shape, generator=g)
    a = ab[t].sqrt().float().view(-1, 1, 1, 1)
    s = (1 - ab[t]).sqrt().float().view(-1, 1, 1, 1)
    xt = a * x0 + s * e
    tot = 0.0
    for lo in range(0, len(x0), batch):
        xb, ab_, sb = xt[lo:lo + batch], a[lo:lo + batch], s[lo:lo + batch]
        out = model(xb, t[lo:lo + batch].float())
        if info["prediction_type"] != "epsilon":  # the eps implied by the x0 estimate: (x - a D(x)) / s
            out = (xb - ab_ * prediction_to_x0(info["prediction_type"], out, xb, ab_, sb)) / sb
        tot += float(((out - e[lo:lo + batch]) ** 2).sum())
    return tot / e.numel()


def sample_model(model, info: dict, n: int, steps: int, seed: int = 0, clip: bool = True) -> np.ndarray:
    sch = train_schedule(info)
    chain = make_chain(sch, steps, "trailing")
    return ddim_sample(model, info["prediction_type"], sch, chain, n, info["image_shape"], seed=seed, clip=clip)


def load(path, ema: bool = True):
    return load_checkpoint_model(path, ema=ema)


def load_chain_denoiser(path, steps: int, dtype=None):
    """A checkpoint's EMA model on a ``steps``-step trailing chain of its own training schedule.

    Returns (model, info, chain, chain_denoiser); info is normalised by ``model_info``.
    """
    from pifskit.torch.analysis import make_denoiser, model_info

    model, info = load(path)
    info = model_info(info)
    chain = make_chain(get_schedule(info["schedule"]), steps, "trailing")
    kw = {} if dtype is None else {"dtype": dtype}
    return model, info, chain, make_denoiser(model, info, chain, **kw)
