"""pifskit.torch.lyapunov: numerical spectrum of the exact Gaussian denoiser == analytic surrogate (float64)."""

import json

import numpy as np
import pytest
import torch

from pifskit import PifsError, get_schedule, make_chain
from pifskit.chains import Chain
from pifskit.cli import main
from pifskit.lyapunov import kaplan_yorke, lyapunov_exponents
from pifskit.spectra import Spectrum, powerlaw
from pifskit.torch.adapter import ChainDenoiser, GaussianDenoiser, ModelDenoiser
from pifskit.torch.lyapunov import (
    lyapunov_full_jacobian,
    lyapunov_spectrum,
    random_frame,
)
from pifskit.torch.testing import tiny_dit


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _gaussian_chain(lam, chain, seed=0, shape=None):
    d = len(lam)
    U, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    g = GaussianDenoiser(lam, U, shape=shape)
    return ChainDenoiser(ModelDenoiser(g, "sample", "logsnr"), chain)


CHAINS = {
    "sd-trailing-10": lambda: make_chain(get_schedule("sd"), 10, "trailing"),
    "cosine-uniform-7": lambda: make_chain(get_schedule("cosine"), 7, "uniform"),
    "karras-5": lambda: make_chain(get_schedule("edm"), 5, "karras"),
    "from-noise": lambda: Chain(np.array([-np.inf, -2.0, 0.5, 3.0, np.inf])),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_full_spectrum_matches_analytic_to_1e6(name):
    chain = CHAINS[name]()
    rng = np.random.default_rng(5)
    lam = np.sort(rng.lognormal(sigma=2.0, size=24))[::-1]
    cd = _gaussian_chain(lam, chain, shape=(1, 4, 6))
    x = torch.randn(3, 1, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = lyapunov_spectrum(cd.step, chain.n_steps, x, k=24)
    ana = lyapunov_exponents(chain, Spectrum(lam))
    np.testing.assert_allclose(res.exponents, ana, rtol=1e-6, atol=1e-9)
    # linear chain: every trajectory has the same exponents
    assert res.spread.max() < 1e-9
    assert res.kaplan_yorke == pytest.approx(kaplan_yorke(ana), rel=1e-6, abs=1e-9)


def test_powerlaw_spectrum_with_degenerate_eigenvalues():
    spec = powerlaw(4, 2, 2.0, 0.5)  # d = 32, many repeated eigenvalues
    chain = make_chain(get_schedule("sd"), 8, "trailing")
    cd = _gaussian_chain(spec.eigenvalues, chain, seed=1)
    x = torch.randn(2, spec.d, dtype=torch.float64)
    res = lyapunov_spectrum(cd.step, chain.n_steps, x, k=spec.d)
    np.testing.assert_allclose(res.exponents, lyapunov_exponents(chain, spec), rtol=1e-6, atol=1e-9)


def test_top_k_with_refinement_matches_analytic():
    lam = np.logspace(2, -4, 16)
    chain = make_chain(get_schedule("cosine"), 10, "uniform")
    cd = _gaussian_chain(lam, chain, seed=2)
    x = torch.randn(2, 16, dtype=torch.float64)
    ana = lyapunov_exponents(chain, Spectrum(lam))
    errs = []
    for refine in (0, 2, 12):
        res = lyapunov_spectrum(cd.step, chain.n_steps, x, k=4, refine=refine,
                                generator=torch.Generator().manual_seed(0))
        errs.append(np.max(np.abs(res.exponents - ana[:4])))
    assert errs[0] > 1e-3  # one pass from a random frame is not the finite-time spectrum
    assert errs[2] < errs[1] < errs[0]
    np.testing.assert_allclose(res.exponents, ana[:4], rtol=1e-6)


def test_top_k_equals_textbook_full_jacobian_benettin():
    # a nonlinear model: the first k exponents of full-Jacobian Benettin equal top-k Benettin from the same frame
    model, _info = tiny_dit(seed=3, size=4, patch=2, dim=16, depth=1)
    model = model.double()
    chain = make_chain(get_schedule("ddpm"), 4, "trailing")
    cd = ChainDenoiser(ModelDenoiser(model, "epsilon", "discrete"), chain)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    frame = random_frame(2, 16, 16, generator=torch.Generator().manual_seed(2))
    full = lyapunov_full_jacobian(cd.step, chain.n_steps, x, frame=frame)
    top = lyapunov_spectrum(cd.step, chain.n_steps, x, 16, frame=frame.clone(), ritz=False)
    np.testing.assert_allclose(top.per_trajectory, full.per_trajectory, rtol=1e-9, atol=1e-9)
    # nested QR: the first 3 frame vectors evolve identically inside the 16-vector frame
    top3 = lyapunov_spectrum(cd.step, chain.n_steps, x, 3, frame=frame[..., :3].clone(), ritz=False,
                             return_local=True)
    full_local = lyapunov_spectrum(cd.step, chain.n_steps, x, 16, frame=frame.clone(), ritz=False,
                                   return_local=True)
    np.testing.assert_allclose(top3.local, full_local.local[..., :3], rtol=1e-9, atol=1e-9)
    assert full.spread.max() > 0  # nonlinear: trajectories differ


def test_lyapunov_errors():
    chain = make_chain(get_schedule("sd"), 3, "trailing")
    cd = _gaussian_chain(np.ones(4), chain)
    with pytest.raises(PifsError, match="exceeds the dimension"):
        lyapunov_spectrum(cd.step, 3, torch.zeros(1, 4, dtype=torch.float64), k=5)
    with pytest.raises(PifsError, match="frame must have shape"):
        lyapunov_spectrum(cd.step, 3, torch.zeros(1, 4, dtype=torch.float64), k=2, frame=torch.zeros(1, 4, 3))


def test_cli_numerical_matches_analytic(capsys):
    common = ["lyapunov", "--schedule", "sd", "--steps", "6", "--spectrum", "powerlaw:2", "--resolution", "4",
              "--channels", "2", "--json"]
    assert main(common) == 0
    ana = json.loads(capsys.readouterr().out)
    assert main(common + ["--numerical", "--float64", "--trajectories", "3"]) == 0
    num = json.loads(capsys.readouterr().out)
    assert num["method"] == "numerical" and num["k"] == num["d"] == 32
    np.testing.assert_allclose(num["exponents"], ana["exponents"], rtol=1e-6, atol=1e-9)
    assert num["kaplan_yorke"] == pytest.approx(ana["kaplan_yorke"], abs=1e-6)
    assert len(num["spread"]) == 32 and max(num["spread"]) < 1e-9


def test_cli_numerical_bad_input(capsys):
    base = ["lyapunov", "--schedule", "sd", "--steps", "4", "--spectrum", "powerlaw:2", "--resolution", "4",
            "--channels", "1", "--numerical"]
    assert main(base + ["--k", "17"]) == 2
    assert "exceeds the dimension" in capsys.readouterr().err
    # a discrete-timestep model on a continuous chain
    assert main(["lyapunov", "--schedule", "cosine", "--steps", "3", "--numerical", "--model",
                 "pifskit.torch.testing:tiny_dit"]) == 2
    assert "discrete training timesteps" in capsys.readouterr().err
    assert main(base + ["--model", "no_such_module_xyz:f"]) == 2
    assert "cannot import" in capsys.readouterr().err
