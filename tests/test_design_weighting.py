"""Criterion II: error-sensitivity weighting, unit conversions, effective gamma, Min-SNR comparison."""

import numpy as np
import pytest
from scipy.special import expit

from pifskit import PifsError
from pifskit.design.weighting import (
    IMAGENET_STD,
    design_weighting,
    effective_gamma,
    fitted_gamma,
    loss_weights,
    min_snr_weights,
    pixel_variance_from_std,
    sensitivity,
)
from pifskit.schedules import CosineSchedule, get_schedule
from pifskit.spectra import Spectrum, powerlaw


def test_imagenet_gamma_check():
    # theory (check): ImageNet std (0.229, 0.224, 0.225) in [0, 1] -> lambda_eff ~ 0.205 in [-1, 1] -> gamma ~ 4.9
    pv = pixel_variance_from_std(IMAGENET_STD)
    assert pv == pytest.approx(np.mean((2 * np.array(IMAGENET_STD)) ** 2))
    assert round(pv, 3) in (0.204, 0.205)
    g = effective_gamma(Spectrum(np.full(3, pv)))
    assert round(g, 1) == 4.9
    assert abs(g - 5.0) / 5.0 < 0.03  # published Min-SNR gamma = 5


def test_single_variance_is_a_soft_min_snr():
    lam = 0.25
    sp = Spectrum(np.full(5, lam))
    l = np.linspace(-12, 12, 97)
    snr, gamma = np.exp(l), 1 / lam
    wx = loss_weights(l, sp, "x0")
    np.testing.assert_allclose(wx, snr / (1 + snr / gamma), rtol=1e-12)  # harmonic soft-min(SNR, gamma)
    hard = min_snr_weights(l, gamma, "x0")
    assert (wx <= hard * (1 + 1e-12)).all() and (wx >= hard / 2 * (1 - 1e-12)).all()
    assert fitted_gamma(sp) == pytest.approx(gamma, rel=1e-6)


def test_unit_conversions_follow_from_the_parameterisations():
    # eps: x0_hat = (x_t - s eps_hat) / a ; v: x0_hat = a x_t - s v_hat (VP, a^2 + s^2 = 1)
    rng = np.random.default_rng(0)
    for l in (-3.0, 0.0, 2.5):
        a, s = np.sqrt(expit(l)), np.sqrt(expit(-l))
        x_t, e_eps, e_v = rng.normal(size=3)
        x0_from_eps_err = ((x_t - s * e_eps) / a) - (x_t / a)
        x0_from_v_err = (a * x_t - s * e_v) - a * x_t
        assert x0_from_eps_err**2 == pytest.approx(e_eps**2 / np.exp(l))
        assert x0_from_v_err**2 == pytest.approx(e_v**2 / (np.exp(l) + 1))
    sp = powerlaw(16, 3, 2.0, 0.3)
    l = np.linspace(-10, 10, 41)
    wx, we, wv = (loss_weights(l, sp, p) for p in ("x0", "eps", "v"))
    np.testing.assert_allclose(we, wx / np.exp(l), rtol=1e-10)
    np.testing.assert_allclose(wv, wx / (np.exp(l) + 1), rtol=1e-10)


def test_normalisation_and_limits():
    sp = powerlaw(16, 3, 2.0, 0.3)
    ends = np.array([-np.inf, np.inf])
    assert loss_weights(ends, sp, "eps").tolist() == pytest.approx([1.0, 0.0])  # w_eps -> 1 at pure noise
    assert loss_weights(ends, sp, "x0").tolist() == pytest.approx([0.0, effective_gamma(sp)])
    assert loss_weights(ends, sp, "v").tolist() == pytest.approx([0.0, 0.0])
    np.testing.assert_allclose(min_snr_weights(ends, 5.0, "eps"), [1.0, 0.0])


def test_sensitivity_binned_matches_brute_force():
    rng = np.random.default_rng(2)
    ev = np.concatenate([np.exp(rng.normal(-2, 2.5, 5000)), np.zeros(100)])
    sp = Spectrum(ev)
    l = np.linspace(-15, 15, 31)
    brute = expit(l[:, None] + np.log(np.where(ev > 0, ev, 1.0))[None, :]) * (ev > 0)
    np.testing.assert_allclose(sensitivity(l, sp, max_bins=512), brute.mean(axis=1), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(sensitivity(l, sp, max_bins=100000), brute.mean(axis=1), rtol=1e-12)


def test_design_weighting_per_timestep_arrays():
    sd = get_schedule("sd")
    sp = powerlaw(64, 3, 2.0, 0.205)
    d = design_weighting(sd, sp, "v")
    assert d.weights.shape == (1000,) and np.isfinite(d.weights).all()
    np.testing.assert_allclose(d.weights, loss_weights(sd.logsnr_table, sp, "v"))
    np.testing.assert_allclose(d.min_snr, np.minimum(np.exp(sd.logsnr_table), 5.0) / (np.exp(sd.logsnr_table) + 1))
    assert d.gamma == pytest.approx(1 / 0.205)
    # the power-law spectrum spreads W over logSNR: its best single-gamma fit is larger than 1/mean
    assert d.gamma_fit > d.gamma
    # eps weights decrease with the timestep's cleanliness (monotone in logSNR)
    de = design_weighting(sd, sp, "eps")
    assert (np.diff(de.weights) > 0).all()  # timestep 0 is cleanest -> smallest eps weight
    # continuous schedule sampled at t = (n + 1) / T; zero terminal SNR handled
    dc = design_weighting(CosineSchedule(), sp, "eps", num_train_timesteps=100)
    assert dc.weights.shape == (100,) and dc.weights[-1] == pytest.approx(1.0)


def test_bad_input():
    sp = powerlaw(8, 1, 2.0, 1.0)
    with pytest.raises(PifsError, match="prediction"):
        loss_weights([0.0], sp, "score")
    with pytest.raises(PifsError):
        min_snr_weights([0.0], -1.0)
    with pytest.raises(PifsError):
        pixel_variance_from_std([0.2, 0.0])
    with pytest.raises(PifsError, match="no positive"):
        Spectrum(np.zeros(3))
