"""pifskit's U-Net and DiT run in float64 (``model.double()``): forward agrees with float32, and the
numerical Lyapunov spectrum of a tiny U-Net chain is computed in float64 (vs jacrev products + SVD)."""

import numpy as np
import pytest
import torch

from pifskit import get_schedule, make_chain
from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser
from pifskit.torch.lyapunov import lyapunov_spectrum
from pifskit.torch.models import build_model, default_config, timestep_embedding
from _dense_lyapunov import dense_log_singular_values  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TINY = {"dit": {"width": 32, "depth": 2, "heads": 4}, "unet": {"base_channels": 8, "groups": 4}}


def _perturbed(arch: str, seed: int = 0, shape=(1, 8, 8)):
    """A tiny model with its zero-initialised output layers perturbed (a fresh one predicts exactly 0)."""
    torch.manual_seed(seed)
    model = build_model(default_config(arch, shape, **TINY[arch])).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("arch", ["unet", "dit"])
def test_double_forward_matches_float32(arch):
    model = _perturbed(arch)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for t in (torch.tensor([0, 500, 999]), torch.tensor([0.5, 10.25, 999.0]), 7, 3.5):
        y32 = model(x, t)
        y64 = model.double()(x.double(), t)
        model.float()
        assert y64.dtype == torch.float64
        scale = float(y64.abs().max())
        assert scale > 0.1  # a non-trivial output
        assert float((y64 - y32.double()).abs().max()) <= 1e-5 * scale


def test_timestep_embedding_dtype():
    t = torch.tensor([3.0, 999.0])
    e64 = timestep_embedding(t, 16, dtype=torch.float64)
    assert e64.dtype == torch.float64 and timestep_embedding(t, 16).dtype == torch.float32
    half = 8
    w = np.exp(-np.log(10000.0) * np.arange(half) / half)
    ref = np.concatenate([np.cos(np.outer([3.0, 999.0], w)), np.sin(np.outer([3.0, 999.0], w))], axis=1)
    np.testing.assert_allclose(e64.numpy(), ref, rtol=0, atol=1e-13)


def test_unet_chain_lyapunov_in_float64_equals_dense_svd():
    model = _perturbed("unet", seed=4, shape=(1, 4, 4)).double()
    chain = make_chain(get_schedule("ddpm"), 3, "trailing")
    cd = ChainDenoiser(ModelDenoiser(model, "epsilon", "discrete"), chain)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = lyapunov_spectrum(cd.step, chain.n_steps, x, 4, generator=torch.Generator().manual_seed(0))
    ref = dense_log_singular_values(cd.step, chain.n_steps, x, 4)
    assert res.converged and res.meta["tol"] == 1e-6
    np.testing.assert_allclose(res.exponents, ref, rtol=1e-7, atol=1e-9)
    assert np.all(np.abs(res.exponents - ref) <= res.error_bound + 1e-12)
