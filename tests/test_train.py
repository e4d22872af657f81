"""Training loop: tiny runs on digits, exact resume, bad input, loss weights, sampling."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from pifskit import PifsError  # noqa: E402
from pifskit.chains import make_chain  # noqa: E402
from pifskit.cli import main  # noqa: E402
from pifskit.datasets import parse_data_spec  # noqa: E402
from pifskit.geometry import chain_exponent  # noqa: E402
from pifskit.schedules import get_schedule  # noqa: E402
from pifskit.torch import train as tr  # noqa: E402
from pifskit.torch.checkpoint import load_checkpoint, load_checkpoint_model  # noqa: E402
from pifskit.torch.generate import ddim_sample  # noqa: E402

torch.set_num_threads(1)

TINY = ["--batch-size", "16", "--warmup", "2", "--width", "32", "--depth", "2", "--heads", "2", "--threads", "1"]
TINY_DIT = {"width": 32, "depth": 2, "heads": 2}
TINY_UNET = {"base_channels": 8, "groups": 4, "channel_mult": [1, 2]}


def _cfg(**kw):
    base = dict(batch_size=16, warmup=2, model_overrides=TINY_DIT)
    base.update(kw)
    return tr.TrainConfig(**base)


def _states(path):
    ck = load_checkpoint(path)
    return ck["model_state"], ck["ema_state"], ck["optimizer_state"]


def _assert_identical(a, b):
    for sa, sb in zip(_states(a)[:2], _states(b)[:2]):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    oa, ob = _states(a)[2]["state"], _states(b)[2]["state"]
    for k in oa:
        for name in oa[k]:
            assert torch.equal(oa[k][name], ob[k][name])


DATA = parse_data_spec("digits", holdout=0.1, split_seed=0)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(model="unet", prediction="v", weighting="min-snr", model_overrides=TINY_UNET),
])
def test_resume_is_bit_for_bit(tmp_path, kw):
    cfg = _cfg(**kw)
    tr.train(DATA, tmp_path / "straight", 6, cfg, progress=False)
    tr.train(DATA, tmp_path / "split", 3, cfg, progress=False)
    tr.train(None, tmp_path / "split", 6, resume=True, progress=False)
    _assert_identical(tmp_path / "straight" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")
    # a different seed really changes the parameters (the comparison can fail)
    tr.train(DATA, tmp_path / "other", 6, _cfg(**{**kw, "seed": 1}), progress=False)
    with pytest.raises(AssertionError):
        _assert_identical(tmp_path / "straight" / "checkpoint.pt", tmp_path / "other" / "checkpoint.pt")


def test_interrupted_run_resumes_exactly_and_log_is_consistent(tmp_path):
    cfg = _cfg()
    tr.train(DATA, tmp_path / "straight", 6, cfg, progress=False, log_every=1)

    def crash(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.train(DATA, tmp_path / "run", 6, cfg, progress=False, ckpt_every=2, log_every=1, on_step=crash)
    assert load_checkpoint(tmp_path / "run")["step"] == 4
    tr.train(None, tmp_path / "run", 6, resume=True, progress=False, log_every=1)
    _assert_identical(tmp_path / "straight" / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt")
    recs = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if r["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    straight = [json.loads(l) for l in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in recs if r["event"] == "step"] == [r["loss"] for r in straight if r["event"] == "step"]


def test_resume_with_regulariser_is_exact(tmp_path):
    cfg = _cfg(reg_weight=0.5, reg_steps=5)
    tr.train(DATA, tmp_path / "a", 4, cfg, progress=False)
    tr.train(DATA, tmp_path / "b", 2, cfg, progress=False)
    tr.train(None, tmp_path / "b", 4, resume=True, progress=False)
    _assert_identical(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")
    rec = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()][-1]
    assert rec["reg"] > 0 and abs(rec["loss"] - (rec["loss_mse"] + 0.5 * rec["reg"])) < 1e-5


def test_cli_train_resume_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "3", "--out", str(out), *TINY, "--prediction", "eps",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and (out / "checkpoint.pt").is_file() and (out / "log.jsonl").is_file()
    assert main(["train", "--resume", str(out), "--steps", "5", "--threads", "1"]) == 0
    capsys.readouterr()
    model, info = load_checkpoint_model(out)
    assert info["step"] == 5 and info["prediction_type"] == "epsilon" and info["image_shape"] == (1, 8, 8)
    assert info["timestep_convention"] == "discrete" and info["schedule"] == "cosine-discrete"
    ck = load_checkpoint(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck["ema_state"][k])
    s = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(out), "--out", str(s), "--n", "5", "--steps", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    z = np.load(s / "samples.npz")
    assert z["samples"].shape == (5, 1, 8, 8) and np.isfinite(z["samples"]).all()
    assert json.loads(str(z["meta"]))["chain"]["n_steps"] == 4 == res["n_steps"]
    assert (s / "samples.png").stat().st_size > 0


def _bytes(p):
    return p.read_bytes()


def test_cli_bad_input_exit_2_and_nothing_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "2", "--out", str(out), *TINY]) == 0
    capsys.readouterr()  # its progress lines (stderr is not a TTY here)
    ck = out / "checkpoint.pt"
    before = _bytes(ck)
    bad = [
        ["train", "--data", "digits", "--steps", "4", "--out", str(out), *TINY],          # exists
        ["train", "--resume", str(out), "--steps", "4", "--lr", "0.01"],                   # changed hparam
        ["train", "--resume", str(out), "--steps", "4", "--model", "unet"],                # other model
        ["train", "--resume", str(out), "--steps", "4", "--width", "64"],                  # other size
        ["train", "--resume", str(out), "--steps", "1"],                                   # below step
        ["train", "--data", f"mnist:{tmp_path / 'nope'}", "--steps", "2", "--out", str(tmp_path / "x")],
        ["train", "--data", "digits", "--steps", "2", "--out", str(tmp_path / "y"), "--schedule", "edm"],
        ["train", "--data", "digits", "--steps", "2", "--out", str(tmp_path / "z"), "--prediction", "flow"],
        ["train", "--data", "digits", "--steps", "2", "--out", str(tmp_path / "w"), "--batch-size", "5000"],
        ["train", "--data", "digits", "--steps", "2"],                                     # no --out
        ["train", "--data", "digits", "--steps", "2", "--out", str(tmp_path / "v"), "--base-channels", "8"],
    ]
    for argv in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("pifskit: error:") and err.count("\n") == 1, (argv, err)
    assert _bytes(ck) == before
    # a corrupt checkpoint
    bad_dir = tmp_path / "corrupt"
    bad_dir.mkdir()
    (bad_dir / "checkpoint.pt").write_bytes(before[: len(before) // 3])
    assert main(["train", "--resume", str(bad_dir), "--steps", "4"]) == 2
    assert main(["sample", "--checkpoint", str(bad_dir), "--out", str(tmp_path / "s")]) == 2


def test_nan_loss_stops_without_touching_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg()
    tr.train(DATA, tmp_path / "run", 2, cfg, progress=False)
    before = _bytes(tmp_path / "run" / "checkpoint.pt")
    monkeypatch.setattr(tr, "training_target", lambda *a: torch.full_like(a[1], float("nan")))
    with pytest.raises(PifsError, match="non-finite loss at step 2"):
        tr.train(None, tmp_path / "run", 4, resume=True, progress=False)
    assert _bytes(tmp_path / "run" / "checkpoint.pt") == before


def test_min_snr_weights_closed_form():
    sched = get_schedule("cosine-discrete")
    ab = sched.alphas_cumprod
    snr = ab / (1 - ab)
    g = 5.0
    wx, we, wv = (tr.MinSNR(g)(sched, p, None) for p in ("sample", "epsilon", "v_prediction"))
    np.testing.assert_allclose(wx, np.minimum(snr, g))
    np.testing.assert_allclose(we, np.where(snr > g, g / snr, 1.0))
    # the three are the same weight expressed in different units: ||x0 err||^2 = ||eps err||^2 / SNR
    np.testing.assert_allclose(we * snr, wx, rtol=1e-12)
    np.testing.assert_allclose(wv * (snr + 1), wx, rtol=1e-12)


def test_batch_plan_is_a_function_of_seed_and_step():
    n, b = 50, 8
    full = [tr.batch_indices(n, b, 3, s) for s in range(6)]   # 6 steps per epoch, drop_last
    assert len(np.unique(np.concatenate(full))) == 48           # one epoch: no repeats
    np.testing.assert_array_equal(tr.batch_indices(n, b, 3, 4), full[4])
    assert not np.array_equal(tr.batch_indices(n, b, 3, 6), full[0])  # next epoch reshuffles
    r0, r1 = tr.batch_indices(n, b, 3, 2, world=2, rank=0), tr.batch_indices(n, b, 3, 2, world=2, rank=1)
    assert len(r0) == len(r1) == 4 and not set(r0) & set(r1)
    with pytest.raises(PifsError):
        tr.batch_indices(n, 7, 3, 0, world=2)
    assert tr.step_seed(0, 5) == tr.step_seed(0, 5) != tr.step_seed(0, 6)


def test_ddim_sampler_matches_gaussian_geometry():
    """With the exact x0-predictor of N(0, lam I) data the chain multiplies x_init by exp(Lambda(lam))."""
    lam = 0.37
    sched = get_schedule("cosine-discrete")
    chain = make_chain(sched, 12, "trailing")
    lt = torch.from_numpy(sched.logsnr_table)

    def oracle(x, t):
        l = lt[t.round().long()].float().view(-1, 1, 1, 1)
        a2 = torch.sigmoid(l)
        return a2.sqrt() * lam / (a2 * lam + 1 - a2) * x

    x_init = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(oracle, "sample", sched, chain, 3, (1, 2, 2), x_init=x_init)
    ratio = out / x_init.numpy()
    np.testing.assert_allclose(ratio, np.exp(chain_exponent(chain, np.array([lam]))).item(), rtol=2e-5)


def test_geometric_weighting_trains_and_resumes(tmp_path):
    from pifskit.datasets import load_digits

    sched = get_schedule("cosine-discrete")
    w = tr.geometric_weights(sched, "epsilon", load_digits())
    assert w.shape == (1000,) and (w > 0).all()
    assert w[-1] == pytest.approx(1.0, abs=0.02)       # normalised: eps weight -> 1 at pure noise
    assert (np.diff(w) >= -1e-12).all()                 # eps weight grows with noise (falls with SNR)
    cfg = _cfg(weighting="geometric")
    tr.train(DATA, tmp_path / "a", 4, cfg, progress=False)
    tr.train(DATA, tmp_path / "b", 2, cfg, progress=False)
    tr.train(None, tmp_path / "b", 4, resume=True, progress=False)
    _assert_identical(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")
