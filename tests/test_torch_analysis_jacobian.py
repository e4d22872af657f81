"""analyze-model's per-step L_B and M_off against an independent torch.func.jacrev of D_t (issue 9 item 2)."""

import numpy as np
import pytest
import torch

from pifskit import get_schedule, make_chain
from pifskit.torch.analysis import analyze_model
from pifskit.torch.blocks import Partition, block_norms_from_jacobian
from pifskit.torch.testing import tiny_dit


def _independent(model, pred, chain, x, patch=2):
    """Clamped DDIM rollout written out here; jacrev of the unclamped x0 estimate at each visited state."""
    P = Partition.patches(tuple(x.shape), patch)
    LB, MO = [], []
    for i in range(chain.n_steps):
        a, s = float(chain.a[i]), float(chain.s[i])
        t = torch.tensor([float(chain.timesteps[i])])

        def D(v):
            xb = v.reshape((1,) + tuple(x.shape))
            out = model(xb, t)
            x0 = {"epsilon": (xb - s * out) / a, "sample": out, "v_prediction": a * xb - s * out}[pred]
            return x0.reshape(-1)

        J = torch.func.jacrev(D)(x.reshape(-1)).detach()
        bn = block_norms_from_jacobian(J, P)
        LB.append(bn.block_max)
        MO.append(bn.offdiag_mass)
        a1, s1 = float(chain.a[i + 1]), float(chain.s[i + 1])
        with torch.no_grad():
            x0 = D(x.reshape(-1)).reshape(x.shape).clamp(-1, 1)
            x = (s1 / s) * x + (a1 - s1 * a / s) * x0  # DDIM: x' = a' x0 + s' (x - a x0) / s
    return np.array(LB), np.array(MO)


@pytest.mark.parametrize("pred", ["epsilon", "sample", "v_prediction"])
def test_analyze_model_matches_independent_jacrev(pred):
    model, info = tiny_dit(seed=1)
    model = model.double()
    info = dict(info, prediction_type=pred, data={"name": "digits"})  # a pifskit checkpoint's info: data in [-1, 1]
    chain = make_chain(get_schedule("ddpm"), 4)
    r = analyze_model(model, info, chain, patch=2, points=1, trajectories=1, k=1, float64=True, seed=3)
    x = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64)[0]
    LB, MO = _independent(model, pred, chain, x)
    np.testing.assert_allclose(r["steps"]["block_max"], LB, rtol=1e-6)
    np.testing.assert_allclose(r["steps"]["offdiag_mass"], MO, rtol=1e-6, atol=1e-12)
    assert r["clip_x0"] == 1.0
    # the network is in the Jacobian: D_t is not x / a (L_B != 1/a, M_off > 0) after the first step
    assert (r["steps"]["offdiag_mass"][1:] > 1e-4).all()
    assert not np.allclose(r["steps"]["block_max"], 1.0 / chain.a[:-1], rtol=1e-3)
