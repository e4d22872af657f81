"""Training runs that are interrupted, badly placed or watched without a TTY; the loop's small parts."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from pifskit import PifsError  # noqa: E402
from pifskit.cli import build_parser, main  # noqa: E402
from pifskit.datasets import parse_data_spec  # noqa: E402
from pifskit.design.weighting import min_snr_weights  # noqa: E402
from pifskit.schedules import DiscreteSchedule  # noqa: E402
from pifskit.torch import train as tr  # noqa: E402
from pifskit.torch.checkpoint import load_checkpoint  # noqa: E402
from pifskit.torch.config import TrainConfig, cli_fields  # noqa: E402

torch.set_num_threads(1)

TINY = ["--batch-size", "16", "--warmup", "2", "--width", "32", "--depth", "2", "--heads", "2", "--threads", "1"]
DATA = parse_data_spec("digits", holdout=0.1, split_seed=0)


def _cfg(**kw):
    return TrainConfig(**{**dict(batch_size=16, warmup=2, model_overrides={"width": 32, "depth": 2, "heads": 2}),
                          **kw})


def _assert_identical(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"]
    for key in ("model_state", "ema_state"):
        assert ca[key].keys() == cb[key].keys()
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), (key, k)
    oa, ob = ca["optimizer_state"]["state"], cb["optimizer_state"]["state"]
    for k in oa:
        for name in oa[k]:
            assert torch.equal(oa[k][name], ob[k][name])


def _steps_logged(path):
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return recs


def _check_resume_equals_straight(tmp_path, run, k, sig):
    recs = _steps_logged(run / "log.jsonl")
    assert recs[-1] == {"event": "interrupted", "step": k, "signal": sig.name}
    # resume two steps further; the step counter continues from k and equals a straight run of k + 2 steps
    summary = tr.train(None, run, k + 2, resume=True, progress=False, log_every=1)
    assert summary["start_step"] == k and load_checkpoint(run)["step"] == k + 2
    tr.train(DATA, tmp_path / "straight", k + 2, _cfg(), progress=False)
    _assert_identical(run / "checkpoint.pt", tmp_path / "straight" / "checkpoint.pt")
    steps = [r["step"] for r in _steps_logged(run / "log.jsonl") if r["event"] == "step"]
    assert steps == list(range(1, k + 3))


def _wait_for_step(log, n, alive=lambda: True):
    deadline = time.monotonic() + 300
    while not any(r.get("event") == "step" and r["step"] >= n for r in _steps_logged(log)):
        assert alive(), "training ended early"
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)


def test_sigint_to_a_subprocess_saves_and_resume_equals_uninterrupted_run(tmp_path):
    sig, code = signal.SIGINT, 130
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # periodic checkpoints off: whatever is on disk afterwards was written by the signal handler's path
    proc = subprocess.Popen([sys.executable, "-m", "pifskit", "train", "--data", "digits", "--steps", "100000",
                             "--out", str(run), *TINY, "--log-every", "1", "--ckpt-minutes", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(run / "log.jsonl", 3, lambda: proc.poll() is None)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    k = load_checkpoint(run)["step"]
    assert 3 <= k < 100000
    last = err.strip().splitlines()[-1]
    assert f"interrupted by {sig.name} at step {k}; checkpoint at step {k} saved" in last
    assert f"--resume {run} --steps 100000" in last and "Traceback" not in err
    _check_resume_equals_straight(tmp_path, run, k, sig)


def test_sigterm_during_cli_train_saves_and_exits_143(tmp_path, capsys):
    run = tmp_path / "run"

    def killer():  # the handler is installed before the log exists; steps=100000 cannot end on its own
        _wait_for_step(run / "log.jsonl", 3)
        # without a handler SIGTERM would kill pytest itself: then stop the run with SIGINT (and fail below)
        handled = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM if handled else signal.SIGINT)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    rc = main(["train", "--data", "digits", "--steps", "100000", "--out", str(run), *TINY, "--log-every", "1",
               "--ckpt-minutes", "0"])
    th.join()
    assert rc == 143
    k = load_checkpoint(run)["step"]
    assert 3 <= k < 100000
    assert f"interrupted by SIGTERM at step {k}; checkpoint at step {k} saved" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    _check_resume_equals_straight(tmp_path, run, k, signal.SIGTERM)


def test_wall_time_checkpoints_by_default_policy(tmp_path):
    def crash(step, loss):
        if step == 3:
            raise RuntimeError("power cut")

    # ckpt_minutes tiny: a checkpoint after every step; the crash at step 3 leaves step 2 on disk
    with pytest.raises(RuntimeError):
        tr.train(DATA, tmp_path / "a", 6, _cfg(), progress=False, ckpt_minutes=1e-9, on_step=crash)
    assert load_checkpoint(tmp_path / "a")["step"] == 2
    # both policies off: nothing before the end
    with pytest.raises(RuntimeError):
        tr.train(DATA, tmp_path / "b", 6, _cfg(), progress=False, ckpt_minutes=0, on_step=crash)
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    assert tr.DEFAULT_CKPT_MINUTES > 0
    assert build_parser().parse_args(["train", "--steps", "1"]).ckpt_minutes == tr.DEFAULT_CKPT_MINUTES


def test_out_problems_fail_before_any_work(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    loaded = []
    monkeypatch.setattr(type(DATA), "load", lambda self: loaded.append(1) or (_ for _ in ()).throw(AssertionError))
    for out, msg in ((f, "exists and is not a directory"), (f / "sub", "is a file, not a directory")):
        assert main(["train", "--data", "digits", "--steps", "2", "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err and "Traceback" not in err, err
        with pytest.raises(PifsError, match=msg):
            tr.train(DATA, out, 2, _cfg(), progress=False)
    assert f.read_text() == "keep me" and not loaded


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_unwritable_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", "--data", "digits", "--steps", "2", "--out", str(ro / "run"), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not writable" in err
    finally:
        ro.chmod(0o755)


def test_unwritable_folder_message(tmp_path, monkeypatch):
    monkeypatch.setattr(tr.os, "access", lambda path, mode: False)
    with pytest.raises(PifsError, match=r"--out .*run: directory .* is not writable"):
        tr.check_out_dir(tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"\x80\x02garbage that is not a checkpoint" * 20, b"PK\x03\x04" + b"\x00" * 50,
                                     b"plain text\nover two lines\n" * 40])
def test_corrupt_checkpoint_message_is_one_whole_line(tmp_path, capsys, content):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(content)
    with pytest.raises(PifsError) as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{bad / 'checkpoint.pt'}: unreadable or corrupt checkpoint (")
    assert msg.endswith("or not a torch.save file") and msg.count("(") == msg.count(")"), msg
    assert len(msg) < 400
    assert main(["train", "--resume", str(bad), "--steps", "4"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_weights_mismatch_message_names_keys(tmp_path):
    tr.train(DATA, tmp_path / "a", 1, _cfg(), progress=False)
    ck = load_checkpoint(tmp_path / "a")
    ck["ema_state"].pop(next(iter(ck["ema_state"])))
    torch.save(ck, tmp_path / "a" / "checkpoint.pt")
    with pytest.raises(PifsError, match=r"EMA weights do not fit the model config stored with them \(missing ") as e:
        tr.train(None, tmp_path / "a", 2, resume=True, progress=False)
    assert "\n" not in str(e.value)


def test_progress_lines_without_tty_and_no_nan_on_bar(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "3", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("train step ")]
    assert lines[0].startswith("train step 1/3 (33%)  loss ") and lines[-1].startswith("train step 3/3 (100%)")
    assert "nan" not in err
    loss3 = [r for r in _steps_logged(out / "log.jsonl") if r.get("step") == 3 and r["event"] == "step"][0]["loss"]
    assert f"loss {loss3:.4f}" in lines[-1]

    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    monkeypatch.setattr(sys, "stderr", buf)
    from pifskit.cli._common import progress  # the one bar train's callback drives

    with progress("train step", 10) as bar:
        bar.prog.refresh()
        shown0 = buf.getvalue()
        bar(completed=1, loss=f"{0.25:.4f}")
        bar.prog.refresh()
    assert "0/10" in shown0 and "nan" not in shown0 and "loss" not in shown0
    assert "loss 0.2500" in buf.getvalue()


def test_min_snr_weighting_is_finite_at_zero_snr():
    # zero terminal SNR (alpha_bar = 0 at the last timestep, logSNR = -inf)
    sched = DiscreteSchedule(np.linspace(0.999, 0.0, 50))
    assert np.isneginf(sched.logsnr_table[-1])
    ends = {"sample": 0.0, "epsilon": 1.0, "v_prediction": 0.0}  # min(SNR, g) -> 0; /SNR -> 1; /(SNR+1) -> 0
    for pred, end in ends.items():
        w = tr.MinSNR(5.0)(sched, pred, None)
        assert np.isfinite(w).all() and w[-1] == end, pred
        cfg = _cfg(weighting="min-snr", prediction=pred)
        np.testing.assert_array_equal(tr.timestep_weights(cfg, sched, None), w)
    l = np.array([-np.inf, 0.0, np.inf])
    np.testing.assert_allclose(min_snr_weights(l, 5.0, "x0"), [0.0, 1.0, 5.0])
    np.testing.assert_allclose(min_snr_weights(l, 5.0, "eps"), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(min_snr_weights(l, 5.0, "v"), [0.0, 0.5, 0.0])


def test_weighting_registry_and_unknown_name():
    assert tuple(tr.LOSS_WEIGHTINGS) == tr.WEIGHTINGS == ("uniform", "min-snr", "geometric")  # config's names
    assert isinstance(tr.make_weighting(_cfg(weighting="min-snr", gamma=2.0)), tr.MinSNR)
    assert tr.make_weighting(_cfg(weighting="min-snr", gamma=2.0)).gamma == 2.0
    with pytest.raises(PifsError, match="unknown weighting"):
        _cfg(weighting="snr")


def test_ema_update_is_the_exponential_average():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a.register_buffer("count", torch.tensor([1.0]))
    b.register_buffer("count", torch.tensor([7.0]))
    before = [p.detach().clone() for p in a.parameters()]
    tr.ema_update(a, b, 0.9)
    for e0, e1, m in zip(before, a.parameters(), b.parameters()):
        torch.testing.assert_close(e1, 0.9 * e0 + 0.1 * m, rtol=1e-6, atol=1e-7)
    assert a.count.item() == 7.0


def test_cli_flags_come_from_the_config(tmp_path, capsys):
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in sub._actions}
    for f in cli_fields():
        act = flags[f.name]
        assert act.default is None and f"(default {f.default})" in act.help and act.option_strings == [
            "--" + f.name.replace("_", "-")]
    assert TrainConfig().prediction == "v_prediction"
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--steps", "1", "--out", str(out), *TINY, "--json"]) == 0
    capsys.readouterr()
    stored = load_checkpoint(out)["hparams"]
    expect = _cfg().to_dict()
    assert stored == expect and stored["prediction"] == "v_prediction"
