"""Criterion I, finest end: the cosine offset from the quantisation bin."""

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.design.offset import (
    cosine_first_level_noise,
    cosine_offset_for_bits,
    first_level_noise,
    first_level_sigma,
    quantisation_bin,
    shifted_cosine_shift_for_bits,
    solve_first_level,
)
from pifskit.schedules import CosineSchedule, DiscreteSchedule, ShiftedCosineSchedule


def test_published_offset_gives_first_level_0_0064():
    # theory (check): s = 0.008 at T = 1000 gives s_1 = 0.0064 (below the 8-bit bin 1/127.5)
    s1 = first_level_noise(CosineSchedule(0.008), 1000)
    assert round(s1, 4) == 0.0064
    assert s1 < 1 / 127.5
    # three routes agree: continuous schedule at t = 1/T, the closed form, the clipped T-step betas
    assert cosine_first_level_noise(0.008, 1000) == pytest.approx(s1, rel=1e-12)
    disc = CosineSchedule(0.008).discretize(1000)
    assert first_level_noise(disc) == pytest.approx(s1, rel=1e-9)
    assert np.sqrt(disc.betas[0]) == pytest.approx(s1, rel=1e-9)


def test_solving_for_the_bin_gives_about_0_012():
    d = cosine_offset_for_bits(8, 1000)
    assert d.target == pytest.approx(1 / 127.5, rel=1e-15)
    assert round(d.offset, 3) == 0.012
    assert first_level_noise(CosineSchedule(d.offset), 1000) == pytest.approx(1 / 127.5, rel=1e-10)
    assert d.first_sigma == pytest.approx(d.first_noise / np.sqrt(1 - d.first_noise**2), rel=1e-12)
    assert d.first_sigma == pytest.approx(first_level_sigma(d.schedule, 1000))
    assert d.published_first_noise == pytest.approx(cosine_first_level_noise(0.008, 1000))


def test_generic_solver_agrees_with_cosine_solver():
    d = cosine_offset_for_bits(8, 1000)
    s = solve_first_level(CosineSchedule, d.target, 0.0, 0.5, 1000, name="offset")
    assert s == pytest.approx(d.offset, rel=1e-9)


def test_shifted_cosine_family_solver():
    shift = shifted_cosine_shift_for_bits(8, 1000)
    assert first_level_noise(ShiftedCosineSchedule(shift), 1000) == pytest.approx(1 / 127.5, rel=1e-9)


@pytest.mark.parametrize("T", [250, 1000, 4000])
def test_first_level_noise_increases_with_offset(T):
    s = np.linspace(0, 1 - 1 / T - 1e-6, 200)
    assert (np.diff(cosine_first_level_noise(s, T)) > 0).all()


def test_quantisation_bin_rules():
    assert quantisation_bin(8) == pytest.approx(2 / 255)
    assert quantisation_bin(8, "bin-std") == pytest.approx(2 / 255 / np.sqrt(12))
    assert quantisation_bin(10) == pytest.approx(2 / 1023)
    d = cosine_offset_for_bits(10, 1000)
    assert first_level_noise(d.schedule, 1000) == pytest.approx(2 / 1023, rel=1e-9)
    assert d.offset < cosine_offset_for_bits(8, 1000).offset


@pytest.mark.parametrize("bits", [0, 17, -3, 8.0, True])
def test_bad_bits(bits):
    with pytest.raises(PifsError, match="1..16"):
        cosine_offset_for_bits(bits, 1000)


def test_unreachable_target_and_bad_T():
    with pytest.raises(PifsError, match="reachable"):
        cosine_offset_for_bits(16, 1000)  # even s = 0 is coarser than a 16-bit bin at T = 1000
    with pytest.raises(PifsError):
        cosine_offset_for_bits(8, 0)
    with pytest.raises(PifsError, match="T = 1000"):
        first_level_noise(DiscreteSchedule.scaled_linear(1000), 500)
    with pytest.raises(PifsError, match="no offset"):
        solve_first_level(CosineSchedule, 0.5, 0.0, 0.5, 1000, name="offset")
