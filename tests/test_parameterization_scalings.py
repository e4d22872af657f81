"""The scalings table: D = c_skip x + c_out F inverts the training target for every prediction type."""

import numpy as np
import pytest
import torch

from pifskit._validate import PifsError
from pifskit.parameterization import input_scale, target_scalings, x0_scalings


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "flow", "EPSILON", "v_prediction", "sample"])
def test_x0_scalings_invert_target_numpy_and_torch(pred):
    rng = np.random.default_rng(0)
    l = np.linspace(-8, 8, 9)
    a, s = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l)))
    x0, e = rng.standard_normal(9), rng.standard_normal(9)
    t_x0, t_eps = target_scalings(pred, a, s)
    F = t_x0 * x0 + t_eps * e  # the exact network output
    c_skip, c_out = x0_scalings(pred, a, s)
    np.testing.assert_allclose(c_skip * (a * x0 + s * e) + c_out * F, x0, atol=1e-12)
    ta, ts = torch.from_numpy(a), torch.from_numpy(s)
    for u, v in zip(x0_scalings(pred, ta, ts), (c_skip, c_out)):
        np.testing.assert_allclose(np.broadcast_to(u.numpy(), a.shape), np.broadcast_to(v, a.shape), rtol=1e-15)


def test_input_scale_closed_forms():
    a, s = np.array([0.6]), np.array([0.8])
    assert input_scale("vp", a, s)[0] == 1.0
    assert input_scale("ve", a, s)[0] == pytest.approx(1 / 0.6)  # x_ve = x0 + (s/a) e = x / a
    assert input_scale("flow", a, s)[0] == pytest.approx(1 / 1.4)  # x_f = (1 - t_f) x0 + t_f e, t_f = s/(a+s)
    with pytest.raises(PifsError, match="input space"):
        input_scale("edm", a, s)
