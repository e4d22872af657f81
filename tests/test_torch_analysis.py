"""``pifskit analyze-model`` end to end on a tiny random DiT, report contents, and bad input (exit 2)."""

import json
import textwrap

import numpy as np
import pytest

from pifskit import get_schedule, make_chain
from pifskit.blockmass import offdiag_block_mass
from pifskit.cli import main
from pifskit.geometry import contraction_threshold
from pifskit.lyapunov import kaplan_yorke
from pifskit.spectra import IMAGENET_PIXEL_VARIANCE, powerlaw
from pifskit.torch.analysis import analyze_model
from pifskit.torch.testing import tiny_dit


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_analyze_model_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["analyze-model", "--model", "pifskit.torch.testing:tiny_dit", "--steps", "4", "--k", "4",
               "--trajectories", "2", "--out", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    for name in ("report.json", "report.png", "report.html"):
        assert (out / name).stat().st_size > 500
    assert json.loads((out / "report.json").read_text())["d"] == 64
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "L*_t" in html
    chain = make_chain(get_schedule("ddpm"), 4, "trailing")
    st = res["steps"]
    np.testing.assert_allclose(st["contraction_threshold"], contraction_threshold(chain))
    grid = powerlaw(8, 1, 2.0, IMAGENET_PIXEL_VARIANCE).power_grid  # the default (issue 9 item 12)
    np.testing.assert_allclose(st["surrogate_offdiag_mass"], offdiag_block_mass(chain.logsnr[:-1], grid, 2))
    assert st["contractive"] == [lb < ls for lb, ls in zip(st["block_max"], st["contraction_threshold"])]
    assert all(f >= s - 1e-9 for f, s in zip(st["block_max_frob"], st["block_max"]))  # ||.||_F >= ||.||_2
    num = res["numerical"]
    assert num["k"] == 4 and len(num["spread"]) == 4
    assert num["kaplan_yorke"] == pytest.approx(kaplan_yorke(num["exponents"]))
    assert len(res["analytic"]["exponents_top"]) == 4


def test_analyze_model_exact_and_estimated_block_norms_agree():
    model, info = tiny_dit(seed=4)
    chain = make_chain(get_schedule("ddpm"), 3, "trailing")
    common = {"patch": 2, "points": 1, "k": 2, "trajectories": 1, "refine": 0, "float64": True, "seed": 1}
    ex = analyze_model(model, info, chain, None, exact=True, **common)
    est = analyze_model(model, info, chain, None, exact=False, probes=256, **common)
    np.testing.assert_allclose(est["steps"]["block_max_frob"], ex["steps"]["block_max_frob"], rtol=0.1)
    np.testing.assert_allclose(est["steps"]["offdiag_mass"], ex["steps"]["offdiag_mass"], atol=0.05)


def test_analyze_model_checkpoint(tmp_path, capsys):
    import pifskit.torch.checkpoint as ckpt
    import pifskit.torch.models as models

    cfg = models.default_config("dit", (1, 8, 8), "epsilon")
    model = models.build_model(cfg)
    state = model.state_dict()
    path = ckpt.save_checkpoint(tmp_path / "run", {
        "model_config": cfg, "model_state": state, "ema_state": state, "step": 0, "hparams": {}, "data": {},
        "image_shape": [1, 8, 8], "schedule": "ddpm", "prediction": "epsilon"})
    rc = main(["analyze-model", "--model", str(path), "--steps", "3", "--k", "2", "--trajectories", "1",
               "--points", "1", "--out", str(tmp_path / "rep"), "--json"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["d"] == 64 and len(res["steps"]["block_max"]) == 3


def _write_bad_module(tmp_path):
    (tmp_path / "badmodels_pifs.py").write_text(textwrap.dedent("""
        import torch

        def wrong_shape():
            return (lambda x, t: x[:, :, :4]), {"prediction_type": "sample", "sample_shape": [1, 8, 8],
                                               "timestep_convention": "discrete", "schedule": "ddpm"}
    """))


@pytest.mark.parametrize("extra,message", [
    (["--model", "pifskit.torch.testing:tiny_dit", "--patch", "3"], "does not tile"),
    (["--model", "pifskit.torch.testing:tiny_dit", "--k", "65"], "exceeds the dimension"),
    (["--model", "pifskit.torch.testing:tiny_dit", "--schedule", "cosine"], "discrete training timesteps"),
    (["--model", "badmodels_pifs:wrong_shape"], "output has shape"),
    (["--model", "not-an-entry-point"], "neither an existing checkpoint"),
])
def test_analyze_model_bad_input(tmp_path, monkeypatch, capsys, extra, message):
    _write_bad_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["analyze-model", "--steps", "3", "--out", str(tmp_path / "rep")] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_analyze_model_factory_message(tmp_path, capsys):
    rc = main(["analyze-model", "--steps", "3", "--model", "os:getcwd", "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "factory must return a model" in err[0] and "sample_shape" in err[0]


@pytest.mark.parametrize("kind", ["file", "readonly"])
def test_analyze_model_checks_out_before_work(tmp_path, monkeypatch, capsys, kind):
    import os

    import pifskit.torch.analysis as an

    if kind == "file":
        out = tmp_path / "taken"
        out.write_text("keep")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: permissions not enforced")
        out = ro / "rep"
    called = []
    monkeypatch.setattr(an, "load_model", lambda spec: called.append(spec))  # any work would record a call
    rc = main(["analyze-model", "--steps", "3", "--model", "pifskit.torch.testing:tiny_dit", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--out" in err[0] and not called
    if kind == "file":
        assert out.read_text() == "keep"
