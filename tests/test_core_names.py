"""Issue 9 items 6, 10, 12 and issue 10 item 7 (core): names, frozen schedules, empty files, make_chain kwargs."""

import dataclasses

import numpy as np
import pytest

from pifskit._validate import PifsError
from pifskit.chains import make_chain
from pifskit.design.weighting import design_weighting
from pifskit.schedules import (
    CosineSchedule,
    EDMSchedule,
    LinearBetaSchedule,
    RectifiedFlowSchedule,
    ScaledLinearBetaSchedule,
    ShiftedCosineSchedule,
    SigmoidSchedule,
    get_schedule,
)
from pifskit.spectra import IMAGENET_PIXEL_VARIANCE, from_file, powerlaw


def test_diffusers_beta_schedule_names_are_the_discrete_schedules():
    np.testing.assert_array_equal(get_schedule("scaled_linear").alphas_cumprod, get_schedule("sd").alphas_cumprod)
    np.testing.assert_array_equal(get_schedule("linear").alphas_cumprod, get_schedule("ddpm").alphas_cumprod)
    np.testing.assert_array_equal(get_schedule("SD").alphas_cumprod, get_schedule("sd").alphas_cumprod)
    cos = get_schedule("squaredcos_cap_v2")
    assert cos.num_train_timesteps == 1000
    # float32 betas of the cosine schedule: agree with the float64 discretisation to float32 precision
    np.testing.assert_allclose(cos.alphas_cumprod[:-1], get_schedule("cosine-discrete").alphas_cumprod[:-1], rtol=1e-5)


def test_diffusers_squaredcos_matches_config_import():
    from pifskit.scheduler_config import load_scheduler_config

    sched, _ = load_scheduler_config({"beta_schedule": "squaredcos_cap_v2"})
    np.testing.assert_array_equal(get_schedule("squaredcos_cap_v2").alphas_cumprod, sched.alphas_cumprod)


@pytest.mark.parametrize("cls", [LinearBetaSchedule, ScaledLinearBetaSchedule, CosineSchedule, SigmoidSchedule,
                                 ShiftedCosineSchedule, EDMSchedule, RectifiedFlowSchedule])
def test_schedules_are_frozen_dataclasses(cls):
    s = cls()
    assert dataclasses.is_dataclass(s)
    field = dataclasses.fields(s)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, field, 1.0)


def test_shifted_cosine_base_range_vs_actual_range():
    s = ShiftedCosineSchedule(shift=-2.0, base_logsnr_min=-10.0, base_logsnr_max=10.0)
    assert s.logsnr_min == pytest.approx(-12.0, abs=1e-9)
    assert s.logsnr_max == pytest.approx(8.0, abs=1e-9)
    assert not hasattr(s, "logsnr_min_")


def test_beta_end_below_start_rejected():
    with pytest.raises(PifsError, match="beta_start <= beta_end"):
        LinearBetaSchedule(0.02, 0.001)


def test_pixel_variance_from_formula():
    assert IMAGENET_PIXEL_VARIANCE == pytest.approx(4 * (0.229**2 + 0.224**2 + 0.225**2) / 3, rel=1e-15)
    assert round(IMAGENET_PIXEL_VARIANCE, 4) == 0.2043


@pytest.mark.parametrize("content", ["", "# only a comment\n"])
def test_empty_spectrum_file_is_a_clear_error(tmp_path, content, recwarn):
    p = tmp_path / "eigs.txt"
    p.write_text(content)
    with pytest.raises(PifsError, match="empty|no eigenvalues|no data"):
        from_file(p)
    assert not [w for w in recwarn if "numpy" in str(w.filename) or "no data" in str(w.message)]


def test_folder_as_spectrum_file(tmp_path):
    with pytest.raises(PifsError, match="folder"):
        from_file(tmp_path)


def test_weighting_accepts_diffusers_prediction_names():
    sp, sched = powerlaw(8, 1, 2.0, 0.5), get_schedule("ddpm")
    for long, short in (("epsilon", "eps"), ("sample", "x0"), ("v_prediction", "v")):
        a, b = design_weighting(sched, sp, long), design_weighting(sched, sp, short)
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.prediction == short


@pytest.mark.parametrize("sched,spacing,kw", [
    ("cosine", "logsnr", {"rho": 5.0}),
    ("sd", "ays-sd15", {"rho": 5.0}),
    ("cosine", "trailing", {"steps_offset": 1}),
    ("edm", "uniform", {"sigma_min": 0.1}),
])
def test_make_chain_rejects_unused_keywords(sched, spacing, kw):
    with pytest.raises(PifsError, match="does not take"):
        make_chain(get_schedule(sched), 10, spacing, **kw)


def test_make_chain_logsnr_honours_sigma_range():
    ch = make_chain(get_schedule("edm"), 5, "logsnr", sigma_min=0.1, sigma_max=10.0)
    np.testing.assert_allclose(ch.sigmas[:-1], np.geomspace(10.0, 0.1, 5), rtol=1e-12)
