"""`pifskit sample`: safe by default (x0 clamp, range warning), discrete-schedule check, readable grid."""

import json

import numpy as np
import torch
from PIL import Image

from pifskit.cli import main
from pifskit.torch.checkpoint import save_checkpoint
from pifskit.torch.models import build_model, default_config
from pifskit.torch.generate import save_grid


def _checkpoint(tmp_path, prediction="epsilon", schedule="cosine-discrete", seed=0):
    cfg = default_config("dit", (1, 8, 8), prediction)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # random, non-zero output layer: an untrained eps net, the worst case for divergence
        for p in model.parameters():
            p.normal_(0, 0.3)
    state = model.state_dict()
    return save_checkpoint(tmp_path / "run", {
        "model_config": cfg, "model_state": state, "ema_state": state, "step": 0, "hparams": {}, "data": {},
        "image_shape": [1, 8, 8], "schedule": schedule, "prediction": prediction})


def test_sample_defaults_stay_in_data_range_for_any_checkpoint(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s"), "--n", "8", "--steps", "10",
                 "--json"]) == 0
    x = np.load(tmp_path / "s" / "samples.npz")["samples"]
    assert np.abs(x).max() <= 1.0 + 1e-5  # DDIM's last step returns the clamped x0 estimate
    assert "warning" not in capsys.readouterr().err
    # the raw DDIM map of the same checkpoint diverges (eps from a ~ 5e-5) and says so on one stderr line
    assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "r"), "--n", "8", "--steps", "10",
                 "--no-clip", "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert np.abs(np.load(tmp_path / "r" / "samples.npz")["samples"]).max() > 10
    assert len(err) == 1 and err[0].startswith("warning:") and "outside [-1.5, 1.5]" in err[0]


def test_sample_rejects_continuous_schedule_with_num_train_timesteps(tmp_path, capsys):
    # ddpm-linear is a continuous LinearBetaSchedule that also has num_train_timesteps
    path = _checkpoint(tmp_path, schedule="ddpm-linear")
    assert main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s"), "--n", "2", "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not discrete" in err[0]


def test_save_grid_upscales_and_spaces(tmp_path):
    imgs = np.linspace(-1, 1, 64 * 64).reshape(64, 1, 8, 8)
    p = save_grid(imgs, tmp_path / "g.png")
    w, h = Image.open(p).size
    assert (w, h) == (8 * (32 + 2) + 2,) * 2  # 8 x 8 grid of 32-px digits with 2-px white gaps, not 73 x 73
    arr = np.asarray(Image.open(p).convert("L"))
    assert (arr[:2] == 255).all() and (arr[:, 34:36] == 255).all()


def test_train_then_sample_with_defaults_stays_in_data_range(tmp_path, capsys):
    """Issue 9.1: a few-hundred-step training with the default prediction / schedule / EMA (tiny width for
    speed), sampled with the default command, stays within the data range [-1, 1] and warns nothing."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "300", "--out", str(run), "--width", "32", "--depth", "1",
                 "--heads", "2", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s"), "--n", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    x = np.load(tmp_path / "s" / "samples.npz")["samples"]
    assert json.loads(str(np.load(tmp_path / "s" / "samples.npz")["meta"]))["prediction_type"] == "v_prediction"
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0 + 1e-5
    assert 0.05 < res["std"] < 1.0  # not collapsed to a constant, not noise-scale
