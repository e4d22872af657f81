"""Chains: spacing rules, Karras, uniform logSNR, AYS, explicit lists, validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pifskit import Chain, PifsError, get_schedule, make_chain
from pifskit.chains import (
    AYS_SIGMAS,
    AYS_TIMESTEPS,
    SPACINGS,
    ays_chain,
    diffusers_timesteps,
    karras_sigmas,
    loglinear_interp,
    sigma_range,
)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 10, 37])
def test_every_spacing_gives_valid_chain(spacing, steps):
    # AYS-SVD's levels (700..0.002) lie outside SD's range: they get SVD's EDM range (issue 9 item 12)
    ch = make_chain(get_schedule("edm:0.002:700" if spacing == "ays-svd" else "sd"), steps, spacing)
    assert ch.n_steps == steps
    assert (np.diff(ch.logsnr) > 0).all()
    assert isinstance(ch.lands_clean, bool)


def test_ays_outside_the_schedule_range_is_refused_and_mapped_spacings_say_so():
    with pytest.raises(PifsError, match="outside this schedule's noise range"):
        make_chain(get_schedule("sd"), 10, "ays-svd")
    assert "notices" not in make_chain(get_schedule("sd"), 10, "ays-sd15").meta
    assert "uniform in t" in make_chain(get_schedule("cosine"), 10, "trailing").meta["notices"][0]
    assert "trailing rule" in make_chain(get_schedule("sd"), 10, "uniform").meta["notices"][0]
    assert "notices" not in make_chain(get_schedule("sd"), 10, "trailing").meta
    with pytest.raises(PifsError, match="leading.*discrete"):
        make_chain(get_schedule("cosine"), 10, "leading")


def test_spacing_rules_by_hand():
    np.testing.assert_array_equal(diffusers_timesteps(1000, 10, "trailing"), np.arange(999, 0, -100))
    np.testing.assert_array_equal(diffusers_timesteps(1000, 10, "leading", 1), np.arange(901, 0, -100))
    np.testing.assert_array_equal(diffusers_timesteps(1000, 4, "linspace"), [999, 666, 333, 0])
    with pytest.raises(PifsError, match="<= 1000"):
        diffusers_timesteps(1000, 1001)
    with pytest.raises(PifsError, match=">= 1"):
        diffusers_timesteps(1000, 0)


def test_karras_formula_and_chain():
    s = karras_sigmas(0.029, 14.615, 10, 7.0)
    i = np.arange(10)
    ref = (14.615 ** (1 / 7) + i / 9 * (0.029 ** (1 / 7) - 14.615 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s, ref, rtol=1e-13)
    sd = get_schedule("sd")
    ch = make_chain(sd, 10, "karras")
    smin, smax = sigma_range(sd)
    np.testing.assert_allclose(ch.sigmas[[0, 9, 10]], [smax, smin, 0.0], rtol=1e-12)
    assert ch.lands_clean and ch.timesteps is not None


def test_uniform_logsnr():
    ch = make_chain(get_schedule("sd"), 8, "logsnr")
    d = np.diff(ch.logsnr[:-1])
    np.testing.assert_allclose(d, d[0], rtol=1e-10)


def test_ays_published_lists():
    ch = ays_chain("sd15", 10, get_schedule("sd"))
    np.testing.assert_allclose(ch.sigmas, list(AYS_SIGMAS["sd15"][:-1]) + [0.0])
    # the published timesteps sit at the published sigmas of the SD schedule
    np.testing.assert_allclose(ch.timesteps, AYS_TIMESTEPS["sd15"], atol=3)
    s = loglinear_interp(AYS_SIGMAS["sd15"], 21)
    assert s.size == 21 and s[0] == pytest.approx(14.615) and s[-1] == pytest.approx(0.029)
    np.testing.assert_allclose(loglinear_interp(AYS_SIGMAS["sd15"], 11), AYS_SIGMAS["sd15"], rtol=1e-12)


def test_continuous_uniform_chain_endpoints():
    ch = make_chain(get_schedule("cosine"), 10, "uniform")
    assert ch.starts_from_noise and ch.lands_clean
    ch2 = make_chain(get_schedule("shifted-cosine"), 10, "uniform")
    assert not ch2.starts_from_noise and not ch2.lands_clean  # clipped at logSNR +-15


def test_from_sigmas_and_alpha_bar():
    ch = Chain.from_sigmas([10.0, 1.0, 0.1, 0.0])
    np.testing.assert_allclose(ch.alpha_bar, [1 / 101, 0.5, 1 / 1.01, 1.0])
    assert ch.lands_clean
    ch2 = Chain.from_alpha_bar([0.0, 0.5, 1.0])
    assert ch2.starts_from_noise and ch2.lands_clean


@pytest.mark.parametrize("bad, msg", [
    ([1.0, 2.0, 2.0], "strictly decreasing"),
    ([1.0, -1.0], "must be >= 0"),
    ([1.0, 0.0, 0.0], "only the last sigma"),
    ([np.nan, 1.0], "NaN"),
])
def test_bad_sigmas(bad, msg):
    with pytest.raises(PifsError, match=msg):
        Chain.from_sigmas(bad)


def test_bad_chains_and_timesteps():
    with pytest.raises(PifsError, match="at least 2"):
        Chain(np.array([1.0]))
    with pytest.raises(PifsError, match="strictly"):
        Chain(np.array([1.0, 0.5]))
    with pytest.raises(PifsError, match="only the first"):
        Chain(np.array([0.0, -np.inf]))
    sd = get_schedule("sd")
    with pytest.raises(PifsError, match="strictly decreasing"):
        Chain.from_timesteps(sd, [10, 10, 5])
    with pytest.raises(PifsError, match=r"\[0, 999\]"):
        Chain.from_timesteps(sd, [1000, 5])
    with pytest.raises(PifsError, match="integers"):
        Chain.from_timesteps(sd, [10.5, 5])
    with pytest.raises(PifsError, match="unknown spacing"):
        make_chain(sd, 10, "fancy")
    with pytest.raises(PifsError, match="discrete"):
        make_chain(get_schedule("cosine"), 10, "leading")


def test_identity_step_dropped_when_not_landing_clean():
    sd = get_schedule("sd")
    ch = Chain.from_timesteps(sd, [999, 500, 0], set_alpha_to_one=False)
    assert ch.n_steps == 2 and ch.meta.get("dropped_identity_step")
    assert not ch.lands_clean


@given(st.integers(1, 1000), st.sampled_from(["trailing", "leading", "linspace"]))
def test_spacing_unique_and_in_range(n, spacing):
    ts = diffusers_timesteps(1000, n, spacing)
    assert ts.size == n and (np.diff(ts) < 0).all() and ts.min() >= 0 and ts.max() <= 999
