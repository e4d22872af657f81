"""The model's own level spectra (JVPs) against the exact mixture's closed-form Jacobian, and
``pifskit design steps --model``."""

import json

import numpy as np
import pytest
import torch

from pifskit import PifsError
from pifskit.cli import main
from pifskit.exact_models import GaussianMixtureModel
from pifskit.design.steps import optimal_steps
from pifskit.schedules import get_schedule
from pifskit.spectra import Spectrum
from pifskit.torch.model_spectrum import (
    MixtureDenoiser,
    _Counter,
    _krylov_basis,
    _ve,
    estimate_level_spectra,
    mean_jacobian_gains,
)


def _mixture(d=6, K=3, seed=0):
    rng = np.random.default_rng(seed)
    U = np.array([np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(K)])
    lam = np.exp(rng.uniform(-4, 0, (K, d)))
    return GaussianMixtureModel(np.full(K, 1.0 / K), 1.5 * rng.standard_normal((K, d)), lam, U)


def _exact_gains(m, X0, sigma, B, seed=0):
    """The same states as mean_jacobian_gains (same generator), the closed-form Jacobian, projected."""
    gen = torch.Generator().manual_seed(int(seed) * 1000003 + int(round(np.log(sigma) * 1e6)) % 999983)
    Y = (torch.as_tensor(X0) + sigma * torch.randn(X0.shape, generator=gen, dtype=torch.float64)).numpy()
    a = 1.0 / np.sqrt(1.0 + sigma**2)
    J = a * m.jacobian(a * Y, -2.0 * np.log(sigma))                  # VE: dD/dy = a dD_vp/dx
    return J, np.einsum("dk,sde,ek->k", B, J, B) / X0.shape[0]


def test_torch_mixture_denoiser_is_the_closed_form():
    m = _mixture()
    den = MixtureDenoiser(m)
    x = m.sample(7, np.random.default_rng(1))
    for l in (-6.0, 0.3, 5.0):
        np.testing.assert_allclose(den(torch.as_tensor(x), l).numpy(), m.denoise(x, l), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0])
def test_gains_match_the_closed_form_jacobian(sigma):
    """b^T J b by JVP equals the closed-form Jacobian's quadratic form to rounding (float64)."""
    m = _mixture()
    X0 = m.sample(5, np.random.default_rng(2))
    B = np.linalg.qr(np.random.default_rng(3).standard_normal((m.d, 4)))[0]
    g = mean_jacobian_gains(MixtureDenoiser(m), X0, [sigma], B)[0]
    _, ge = _exact_gains(m, X0, sigma, B)
    np.testing.assert_allclose(g[:4], ge, rtol=1e-10, atol=1e-13)
    assert 0 < g[:4].min() and g[:4].max() < 1.5


def test_krylov_eigenvalues_match_the_exact_mean_jacobian():
    """Randomized subspace iteration (JVP + VJP, symmetrised) against eigvalsh of the state-averaged closed-form
    Jacobian: the top 3 of 16 within 1e-6 relative (2 power passes, 8 extra vectors; a clear spectral gap)."""
    d = 16
    lam = np.concatenate([[4.0, 2.0, 1.0], np.full(d - 3, 0.01)])
    m = GaussianMixtureModel([1.0], np.zeros((1, d)), lam[None], np.eye(d)[None])
    X0 = m.sample(4, np.random.default_rng(0))
    sigma = 1.5
    J, _ = _exact_gains(m, X0, sigma, np.eye(d))
    Y = torch.as_tensor(X0) + sigma * torch.randn(X0.shape, generator=torch.Generator().manual_seed(
        int(round(np.log(sigma) * 1e6)) % 999983), dtype=torch.float64)
    c = _Counter()
    B, w = _krylov_basis(_ve(MixtureDenoiser(m), sigma), Y, 3, 8, 2, torch.Generator().manual_seed(0), c)
    exact = np.sort(np.linalg.eigvalsh(0.5 * (J.mean(0) + J.mean(0).T)))[::-1][:3]
    np.testing.assert_allclose(w, exact, rtol=1e-6)
    np.testing.assert_allclose(w, lam[:3] / (lam[:3] + sigma**2), rtol=1e-6)  # Gaussian: exact for any state
    assert c.jvps == c.vjps == 4 * 11 * 4                             # (3 passes + Rayleigh-Ritz) x 11 columns x 4


def test_gaussian_data_give_constant_effective_variances_and_the_spectrum_design():
    """One Gaussian component: lambda_eff(sigma) = lambda at every level (to rounding), so the model-aware design
    is the constant-spectrum design; the tail group (rank < d) is the exact mean of the complement's gains."""
    d = 8
    lam = np.array([3.0, 1.0, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01])
    m = GaussianMixtureModel([1.0], np.zeros((1, d)), lam[None], np.eye(d)[None])
    ls = estimate_level_spectra(MixtureDenoiser(m), m.sample(50, np.random.default_rng(0)), (0.03, 14.6),
                                basis=np.eye(d), n_levels=5, refine=2, n_states=3)
    np.testing.assert_allclose(ls.lam, np.tile(lam, (ls.sigmas.size, 1)), rtol=1e-9)
    assert ls.info["model_calls"] == ls.info["jvps"] == 7 * 3 * 8
    sched = get_schedule("sd")
    for solver in ("heun", "dpmpp2m"):
        a = optimal_steps(sched, Spectrum(lam), 6, solver=solver)
        b = optimal_steps(sched, ls, 6, solver=solver)
        assert b.w2 == pytest.approx(a.w2, rel=1e-6)
    # rank 3: the 5 other axes share one gain, Hutchinson with projected Rademacher probes (exact for diagonal J)
    lt = estimate_level_spectra(MixtureDenoiser(m), m.sample(50, np.random.default_rng(0)), (0.03, 14.6),
                                basis=np.eye(d), rank=3, levels=[0.1, 1.0], n_states=2)
    g_tail = np.mean(lam[3:][None] / (lam[3:][None] + np.array([[0.01], [1.0]])), axis=1)
    g = lt.lam[:, 3] / (lt.lam[:, 3] + lt.sigmas**2)
    np.testing.assert_allclose(g, g_tail, rtol=1e-10)
    assert lt.count.tolist() == [1, 1, 1, 5] and "Hutchinson" in lt.source


def test_pca_basis_and_bad_input():
    m = _mixture()
    den = MixtureDenoiser(m)
    X = m.sample(300, np.random.default_rng(0))
    ls = estimate_level_spectra(den, X, (0.05, 10.0), n_levels=3, refine=1, n_states=2)
    assert ls.size == m.d and ls.sigmas.size == 4 and "PCA" in ls.source
    with pytest.raises(PifsError, match="sigma_min"):
        estimate_level_spectra(den, X, (1.0, 0.5))
    with pytest.raises(PifsError, match="basis"):
        estimate_level_spectra(den, X, (0.05, 10.0), basis="nope")
    with pytest.raises(PifsError, match="orthonormal"):
        estimate_level_spectra(den, X, (0.05, 10.0), basis=np.ones((m.d, 2)))


def test_cli_model_gmm_digits(capsys):
    assert main(["design", "steps", "--model", "gmm:digits", "--model-method", "spectrum", "--solver", "heun",
                 "--steps", "4", "--model-levels",
                 "3", "--model-refine", "1", "--model-states", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "gmm:digits" and "exact mixture" in out["spectrum_source"]
    assert out["model_calls"] == 4 * 2 * 64 and out["seconds_model"] > 0
    assert len(out["sigmas"]) == 5 and out["sigmas"][-1] == 0.0 and out["solver"] == "heun"
    assert out["baselines"] and all(out["w2"] <= b["w2"] + 1e-12 for b in out["baselines"].values())


def test_cli_model_checkpoint_krylov_and_tail(tmp_path, capsys):
    from pifskit.torch.checkpoint import save_checkpoint
    from pifskit.torch.models import build_model, default_config

    cfg = default_config("dit", (1, 8, 8), "epsilon")
    torch.manual_seed(0)
    model = build_model(cfg)
    state = model.state_dict()
    path = save_checkpoint(tmp_path / "run", {
        "model_config": cfg, "model_state": state, "ema_state": state, "step": 0, "hparams": {}, "data": {},
        "image_shape": [1, 8, 8], "schedule": "sd", "prediction": "epsilon"})
    assert main(["design", "steps", "--model", str(path), "--model-method", "spectrum", "--steps", "3",
                 "--solver", "dpmpp2m", "--model-levels",
                 "2", "--model-refine", "0", "--model-states", "2", "--model-rank", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ls = out["level_spectra"]
    assert ls["directions"] == 5 and ls["dimension"] == 64 and "Hutchinson" in out["spectrum_source"]
    assert "Jacobian" in out["spectrum_source"] and out["model_calls"] > ls["jvps"]  # + the DDIM samples' forwards
    assert all(out["w2"] <= b["w2"] + 1e-12 for b in out["baselines"].values())
    assert main(["design", "steps", "--model", str(tmp_path / "missing"), "--steps", "3"]) == 2


def test_regression_gains_are_the_gaussian_gain_for_linear_data():
    """Zero-mean Gaussian data along its axes: D = g y sample by sample, so the least-squares response is g exactly
    (x0 symmetrised so the centring mean is 0); with rank < d the pooled complement ratio lies within its gains."""
    d = 6
    lam = np.array([2.0, 1.0, 0.5, 0.1, 0.05, 0.01])
    m = GaussianMixtureModel([1.0], np.zeros((1, d)), lam[None], np.eye(d)[None])
    X = m.sample(40, np.random.default_rng(0))
    X = np.vstack([X, -X])
    ls = estimate_level_spectra(MixtureDenoiser(m), X, (0.03, 14.6), basis=np.eye(d), levels=[0.1, 1.0, 5.0],
                                gains="regression", regression_states=80)
    np.testing.assert_allclose(ls.lam, np.tile(lam, (3, 1)), rtol=1e-9)
    assert ls.info["forwards"] == ls.info["model_calls"] == 3 * 80 and ls.info["jvps"] == 0
    lt = estimate_level_spectra(MixtureDenoiser(m), X, (0.03, 14.6), basis=np.eye(d), rank=2, levels=[1.0],
                                gains="regression", regression_states=80)
    g_tail = lt.lam[0, 2] / (lt.lam[0, 2] + 1.0)
    gs = lam[2:] / (lam[2:] + 1.0)
    assert gs.min() <= g_tail <= gs.max() and "regression" in lt.source
