"""Offline quality metric: Frechet distance, k-NN precision/recall, the classifier and its floor."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from pifskit import PifsError  # noqa: E402
from pifskit.cli import main  # noqa: E402
from pifskit.torch.quality import (frechet_distance, frechet_distance_from_stats, load_classifier,  # noqa: E402
                                   precision_recall, quality_report)

torch.set_num_threads(1)


def test_frechet_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    va, vb = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # same eigenbasis for both
    Ca, Cb = (Q * va) @ Q.T, (Q * vb) @ Q.T
    ref = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance_from_stats(mu_a, Ca, mu_b, Cb) == pytest.approx(ref, rel=1e-10)


def test_frechet_against_scipy_sqrtm_general_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    Ca, Cb = A @ A.T + 0.1 * np.eye(6), B @ B.T + 0.1 * np.eye(6)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((mu_a - mu_b) ** 2) + np.trace(Ca + Cb - 2 * np.real(sqrtm(Ca @ Cb)))
    got = frechet_distance_from_stats(mu_a, Ca, mu_b, Cb)
    assert got == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_from_stats(mu_b, Cb, mu_a, Ca) == pytest.approx(got, rel=1e-8)


def test_frechet_from_features():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    assert abs(frechet_distance(x, x)) < 1e-9
    y = x + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(x, y) == pytest.approx(4.0, rel=1e-9)   # a pure shift: ||delta mu||^2
    assert frechet_distance(x, 2 * x - x.mean(0)) == pytest.approx(np.trace(np.cov(x, rowvar=False)), rel=1e-9)
    with pytest.raises(PifsError):
        frechet_distance(x, x[:, :2])
    with pytest.raises(PifsError):
        frechet_distance(x[:1], x)


def test_precision_recall_cases():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 2))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    # half the fakes on the real manifold, half far away: precision 1/2; they cover the real set: recall 1
    fake = np.concatenate([real[:100], real[:100] + 100.0])
    p, r = precision_recall(real, fake, k=3)
    assert p == 0.5
    # mode collapse: fakes all at copies of 5 real points -> precision 1, recall small
    collapsed = np.repeat(real[:5], 20, axis=0) + 1e-6 * rng.normal(size=(100, 2))
    p, r = precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.2
    with pytest.raises(PifsError):
        precision_recall(real[:3], real, k=3)


def test_train_classifier_floor_and_report(tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["train-classifier", "--data", "digits", "--out", str(out), "--epochs", "4", "--threads", "1",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["heldout_accuracy"] > 0.5          # 10 classes: chance is 0.1
    assert info["floor"]["n"] == info["floor"]["n_ref"] == 180
    assert info["floor"]["frechet_distance"] > 0
    on_disk = json.loads((out / "classifier.json").read_text())
    assert on_disk["floor"] == info["floor"] and "NOT Inception FID" in on_disk["note"]
    model, meta = load_classifier(out)
    assert meta["heldout_accuracy"] == info["heldout_accuracy"]
    # real training images score near the floor; pure noise far above it
    from pifskit.datasets import DataSpec

    train, _ = DataSpec.from_dict(meta["data"]).load()
    real = quality_report(out, train.images[:180], seed=1)
    noise = quality_report(out, np.random.default_rng(0).uniform(-1, 1, (180, 1, 8, 8)).astype(np.float32))
    assert real["frechet_distance"] < 3 * real["floor"]["frechet_distance"]
    assert noise["frechet_distance"] > 10 * noise["floor"]["frechet_distance"]
    assert noise["precision"] < real["precision"]
    assert sum(real["class_histogram"]) == pytest.approx(1.0)


def test_train_classifier_needs_labels_and_holdout(tmp_path):
    assert main(["train-classifier", "--data", "digits", "--out", str(tmp_path / "c"), "--holdout", "0"]) == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "s")]) == 2
