"""Criterion I, coarse end: resolution shift (logSNR) and rectified-flow alpha."""

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.design.shift import (
    downsample_images,
    logsnr_shift_from_alpha,
    powerlaw_shift,
    rectified_flow_alpha,
    shift_from_images,
    shift_from_spectra,
    simple_diffusion_shift,
    top_variance,
)
from pifskit.schedules import RectifiedFlowSchedule, ShiftedCosineSchedule
from pifskit.spectra import Spectrum


def test_box_downsampling_makes_the_dc_variance_scale_with_pixel_count():
    # the image mean is preserved by box downsampling, so the DC eigenvalue N var(mean) scales exactly with N:
    # the measured shift equals simple diffusion's -2 log(R / R0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3, 24, 24)) + rng.normal(size=(40, 1, 1, 1))  # a varying brightness
    for f in (2, 3, 4):
        d = shift_from_images(X, f)
        assert d.resolution == 24 and d.base_resolution == 24 // f
        assert d.logsnr_shift == pytest.approx(-2 * np.log(f), rel=1e-10)
        assert d.timestep_shift == pytest.approx(f, rel=1e-10)
        assert d.logsnr_shift == pytest.approx(simple_diffusion_shift(24, 24 // f), rel=1e-10)


def test_powerlaw_shift_matches_explicit_grid_sum():
    # lambda_top = pv R^2 / S(R), S(R) = sum over the DFT grid of |k|^-p with |k| := 1 at DC
    def S(R, p):
        tot = 0.0
        for i in range(R):
            for j in range(R):
                ki = i if i < R / 2 else i - R
                kj = j if j < R / 2 else j - R
                k2 = max(ki * ki + kj * kj, 1)
                tot += k2 ** (-p / 2)
        return tot

    for p in (1.0, 2.0, 3.0):
        d = powerlaw_shift(16, 8, p, 3, 0.3)
        expected = -np.log((16**2 / S(16, p)) / (8**2 / S(8, p)))
        assert d.logsnr_shift == pytest.approx(expected, rel=1e-12)


def test_powerlaw_limits():
    # flat spectrum: no shift; steep spectrum (convergent sum): the idealised pixel-count rule
    assert powerlaw_shift(256, 64, 0.0).logsnr_shift == pytest.approx(0.0, abs=1e-12)
    steep = powerlaw_shift(256, 64, 8.0)
    assert steep.logsnr_shift == pytest.approx(-2 * np.log(4), rel=2e-3)
    # p <= 2 grows slower than N: smaller |shift| than the rule, increasing with p
    shifts = [powerlaw_shift(256, 64, p).logsnr_shift for p in (1.0, 1.5, 2.0, 2.5)]
    assert all(-2 * np.log(4) < s < 0 for s in shifts)
    assert np.all(np.diff(shifts) < 0)


def test_channels_and_variance_do_not_change_the_powerlaw_shift():
    a = powerlaw_shift(128, 32, 2.0, 3, 0.2).logsnr_shift
    assert powerlaw_shift(128, 32, 2.0, 1, 1.0).logsnr_shift == pytest.approx(a, rel=1e-12)


def test_rectified_flow_alpha_is_the_logsnr_shift():
    d = powerlaw_shift(1024, 256, 2.0)
    t = np.linspace(0.05, 0.95, 19)
    diff = d.rectified_flow().logsnr(t) - RectifiedFlowSchedule(1.0).logsnr(t)
    np.testing.assert_allclose(diff, d.logsnr_shift, rtol=1e-10)
    diff2 = d.shifted_cosine().logsnr(t) - ShiftedCosineSchedule(0.0).logsnr(t)
    np.testing.assert_allclose(diff2, d.logsnr_shift, rtol=1e-10)
    assert logsnr_shift_from_alpha(rectified_flow_alpha(-1.7)) == pytest.approx(-1.7)
    # SD3's alpha = 3 is a logSNR shift of -2 log 3; the sqrt(m/n) rule at 1024^2 from 256^2 gives 4
    assert logsnr_shift_from_alpha(3.0) == pytest.approx(-2 * np.log(3.0))
    assert d.idealised_timestep_shift == pytest.approx(4.0)


def test_measured_spectra_and_top_k():
    sp = Spectrum(np.array([40.0, 10.0, 1.0, 0.1]))
    sp0 = Spectrum(np.array([10.0, 2.5, 1.0]))
    d = shift_from_spectra(sp, sp0, 64, 32)
    assert d.logsnr_shift == pytest.approx(-np.log(4.0))
    d2 = shift_from_spectra(sp, sp0, 64, 32, top=2)
    assert d2.logsnr_shift == pytest.approx(-np.log(np.sqrt(400 / 25.0)))
    assert top_variance(sp, 2) == pytest.approx(20.0)


def test_downsample_is_area_average():
    X = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(downsample_images(X, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("R,R0", [(0, 64), (64, 0), (-5, 64)])
def test_bad_resolution(R, R0):
    with pytest.raises(PifsError):
        powerlaw_shift(R, R0)
    with pytest.raises(PifsError):
        simple_diffusion_shift(R, R0)
