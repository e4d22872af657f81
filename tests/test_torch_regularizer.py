"""pifskit.torch.regularizer: budgets, hinge, differentiability, and a seeded optimisation that lowers L_B."""

import numpy as np
import pytest
import torch

from pifskit import PifsError, get_schedule, make_chain
from pifskit.geometry import contraction_threshold
from pifskit.spectra import powerlaw
from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser
from pifskit.torch.blocks import Partition, block_norms, gaussian_block_row_sums
from pifskit.torch.regularizer import PIFSRegularizer, pifs_regularizer, step_budgets
from pifskit.torch.testing import TinyMLPDenoiser


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_budgets():
    chain = make_chain(get_schedule("sd"), 8, "trailing")
    part = Partition.patches((2, 8, 8), 2)
    lstar = contraction_threshold(chain)
    np.testing.assert_allclose(step_budgets(chain, "lstar", margin=0.1), 1.1 * lstar)
    spec = powerlaw(8, 2, 2.0, 0.205)
    gb = step_budgets(chain, "gaussian", spectrum=spec, partition=part)
    floor = gaussian_block_row_sums(chain.logsnr[:-1], spec.power_grid, 2, "fro", channels=2)
    np.testing.assert_allclose(gb, np.maximum(lstar, floor))
    assert (gb >= lstar).all() and (gb > lstar).any()  # the optimal denoiser exceeds L* somewhere
    with pytest.raises(PifsError, match="power grid"):
        step_budgets(chain, "gaussian", spectrum=None, partition=part)
    with pytest.raises(PifsError, match="images are"):
        step_budgets(chain, "gaussian", spectrum=powerlaw(16, 2), partition=part)
    with pytest.raises(PifsError, match="budget"):
        step_budgets(chain, "tight")
    with pytest.raises(PifsError, match="one per step"):
        step_budgets(chain, np.ones(3))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = TinyMLPDenoiser((1, 4, 4), hidden=32).double()
    sched = get_schedule("cosine")
    chain = make_chain(sched, 4, "uniform")
    cd = ChainDenoiser(ModelDenoiser(model, "sample", "continuous", schedule=sched), chain)
    part = Partition.patches((1, 4, 4), 2)
    return model, chain, cd, part


MARGIN = -0.9  # budget 0.1 L*: the small random model exceeds it at every step


def _excess(cd, chain, part, xt, steps):
    lstar = contraction_threshold(chain) * (1 + MARGIN)
    out = []
    for x, i in zip(xt, steps.tolist()):
        bn = block_norms(lambda v, i=i: cd.denoise(v, i), x, part)
        out.append(max(bn.block_max - lstar[i], 0.0))
    return np.array(out)


def test_hinge_is_zero_under_the_budget_and_differentiable_above():
    model, _chain, cd, part = _setup()
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    steps = torch.tensor([0, 1, 2, 3])
    R0 = pifs_regularizer(cd.denoise, x, steps, part, np.full(4, 1e6), np.ones(4))
    assert float(R0) == 0.0
    R = pifs_regularizer(cd.denoise, x, steps, part, np.full(4, 1e-3), np.ones(4), n_blocks=4, n_probes=2,
                         generator=torch.Generator().manual_seed(0))
    assert float(R) > 0
    grads = torch.autograd.grad(R, [p for p in model.parameters()], allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_regulariser_gradient_reduces_block_max_excess():
    model, chain, cd, part = _setup(seed=1)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64)
    steps = torch.arange(8) % chain.n_steps
    a = torch.as_tensor(chain.a[steps.numpy()]).reshape(-1, 1, 1, 1)
    s = torch.as_tensor(chain.s[steps.numpy()]).reshape(-1, 1, 1, 1)
    xt = a * x0 + s * noise
    before = _excess(cd, chain, part, xt, steps)
    assert before.sum() > 0.1  # the random model violates the budget somewhere
    reg = PIFSRegularizer(chain, part, "lstar", margin=MARGIN, n_blocks=2, n_probes=1, sample_fraction=1.0, scale="relative")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for it in range(40):
        opt.zero_grad()
        R = reg(cd, x0, steps=steps, noise=noise, generator=torch.Generator().manual_seed(100 + it))
        R.backward()
        opt.step()
        losses.append(float(R))
    after = _excess(cd, chain, part, xt, steps)
    assert after.sum() < 0.5 * before.sum()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_module_errors():
    _, chain, _cd, part = _setup()
    with pytest.raises(PifsError, match="sample_fraction"):
        PIFSRegularizer(chain, part, sample_fraction=0.0)
    with pytest.raises(PifsError, match="scale"):
        PIFSRegularizer(chain, part, scale="huge")
