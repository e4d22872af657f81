"""pifskit.torch.adapter: prediction types, timestep conventions, input spaces, the DDIM step map."""

import numpy as np
import pytest
import torch

from pifskit import PifsError, get_schedule, make_chain
from pifskit.chains import Chain
from pifskit.geometry import expansion_function, step_coefficients
from pifskit.torch.adapter import ChainDenoiser, GaussianDenoiser, ModelDenoiser


pytestmark = pytest.mark.usefixtures("torch_single_thread")


class Oracle(torch.nn.Module):
    """Knows x0 and e; checks its input is in its own space and returns its own prediction."""

    def __init__(self, x0, e, a, s, prediction, space):
        super().__init__()
        self.x0, self.e, self.a, self.s, self.pred, self.space = x0, e, a, s, prediction, space
        self.seen_t = None

    def forward(self, x_in, t):
        a, s, x0, e = self.a, self.s, self.x0, self.e
        if self.space == "vp":
            expect = a * x0 + s * e
        elif self.space == "ve":
            expect = x0 + (s / a) * e
        else:
            tf = s / (a + s)
            expect = (1 - tf) * x0 + tf * e
        torch.testing.assert_close(x_in, expect, rtol=1e-12, atol=1e-12)
        self.seen_t = t
        return {"epsilon": e, "sample": x0, "v_prediction": a * e - s * x0, "flow": e - x0}[self.pred]


@pytest.mark.parametrize("prediction,space", [("epsilon", "vp"), ("epsilon", "ve"), ("sample", "vp"),
                                              ("v_prediction", "vp"), ("flow", "flow"), ("sample", "flow")])
def test_every_prediction_recovers_x0(prediction, space):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    e = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    l = 0.7
    a, s = float(np.sqrt(1 / (1 + np.exp(-l)))), float(np.sqrt(1 / (1 + np.exp(l))))
    model = Oracle(x0, e, a, s, prediction, space)
    den = ModelDenoiser(model, prediction, "logsnr", input_space=space)
    torch.testing.assert_close(den(a * x0 + s * e, l), x0, rtol=1e-12, atol=1e-12)


def test_flow_space_scaling_is_one_over_a_plus_s():
    # x_f = (1 - t) x0 + t e with t = s / (a + s) equals x_vp / (a + s), and sqrt((1-t)^2 + t^2) = 1 / (a + s)
    for l in (-3.0, 0.0, 2.5):
        a, s = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l)))
        t = s / (a + s)
        assert np.isclose(np.sqrt((1 - t) ** 2 + t**2), 1 / (a + s))
        assert np.isclose(2 * np.log((1 - t) / t), l)  # rectified flow logSNR


def test_timestep_conventions():
    sched = get_schedule("cosine")
    chain = make_chain(sched, 4, "uniform")
    ld = ModelDenoiser(lambda x, t: x, "sample", "continuous", schedule=sched)
    l = chain.logsnr[:-1]
    np.testing.assert_allclose(ld.model_time(l), sched.t_of_logsnr(l))
    np.testing.assert_allclose(ld.model_time(l), np.linspace(1, 0, 5)[:-1], atol=1e-9)
    np.testing.assert_allclose(ModelDenoiser(lambda x, t: x, "sample", "sigma").model_time(l), np.exp(-l / 2))
    np.testing.assert_allclose(ModelDenoiser(lambda x, t: x, "sample", "logsnr").model_time(l), l)
    flow = ModelDenoiser(lambda x, t: x, "flow", "flow", timestep_scale=1000.0).model_time(l)
    a, s = np.sqrt(1 / (1 + np.exp(-l))), np.sqrt(1 / (1 + np.exp(l)))
    np.testing.assert_allclose(flow, 1000 * s / (a + s))
    # rectified flow schedule: its continuous t is the flow time when shift = 1
    rf = get_schedule("rectified-flow")
    np.testing.assert_allclose(ModelDenoiser(lambda x, t: x, "flow", "continuous", schedule=rf).model_time(l),
                               s / (a + s), rtol=1e-9)


def test_discrete_chain_passes_training_timesteps():
    sched = get_schedule("ddpm")
    chain = make_chain(sched, 5, "trailing")
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    cd = ChainDenoiser(ModelDenoiser(model, "epsilon", "discrete"), chain)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    cd.sample(x)
    got = [int(t[0]) for t in seen]
    assert got == list(chain.timesteps)
    # zero epsilon: D = x / a, F = c x + d x / a
    c, d = step_coefficients(chain)
    out = cd.step(x, 2)
    torch.testing.assert_close(out, (c[2] + d[2] / chain.a[2]) * x)


def test_step_map_of_gaussian_denoiser_is_the_expansion_function():
    rng = np.random.default_rng(1)
    d = 12
    lam = np.sort(rng.lognormal(size=d))[::-1]
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    chain = make_chain(get_schedule("sd"), 6, "trailing")
    cd = ChainDenoiser(ModelDenoiser(GaussianDenoiser(lam, U), "sample", "logsnr"), chain)
    f = expansion_function(chain, lam)
    x = torch.as_tensor(rng.normal(size=(3, d)))
    for i in range(chain.n_steps):
        expect = ((x.numpy() @ U) * f[i]) @ U.T
        np.testing.assert_allclose(cd.step(x, i).numpy(), expect, rtol=1e-12, atol=1e-12)


def test_diffusers_unet_signature():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    chain = make_chain(get_schedule("ddpm"), 3, "trailing")
    cd = ChainDenoiser(ModelDenoiser(unet, "epsilon", "discrete", sample_shape=(1, 8, 8)), chain)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        eps = unet(x, torch.full((2,), float(chain.timesteps[1]))).sample
        expect = (x - chain.s[1] * eps) / chain.a[1]
        torch.testing.assert_close(cd.denoise(x, 1), expect.float(), rtol=1e-5, atol=1e-5)


def test_bad_input():
    chain = make_chain(get_schedule("cosine"), 3, "uniform")
    with pytest.raises(PifsError, match="discrete training timesteps"):
        ChainDenoiser(ModelDenoiser(lambda x, t: x, "epsilon", "discrete"), chain)
    with pytest.raises(PifsError, match="output has shape"):
        ModelDenoiser(lambda x, t: x[:, :1], "sample", "logsnr")(torch.zeros(2, 3, 4, 4), 0.0)
    with pytest.raises(PifsError, match="prediction type"):
        ModelDenoiser(lambda x, t: x, "score", "logsnr")
    with pytest.raises(PifsError, match="timestep convention"):
        ModelDenoiser(lambda x, t: x, "sample", "karras")
    with pytest.raises(PifsError, match="needs the model's schedule"):
        ModelDenoiser(lambda x, t: x, "sample", "continuous")
    with pytest.raises(PifsError, match="expects"):
        ModelDenoiser(lambda x, t: x, "sample", "logsnr", sample_shape=(1, 8, 8))(torch.zeros(1, 1, 4, 4), 0.0)
    noise_chain = Chain(np.array([-np.inf, 0.0, np.inf]))
    cd = ChainDenoiser(ModelDenoiser(lambda x, t: x, "epsilon", "logsnr"), noise_chain)
    with pytest.raises(PifsError, match="pure noise"):
        cd.step(torch.zeros(1, 4), 0)
