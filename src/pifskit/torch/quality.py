"""An offline sample-quality metric on the features of a small CNN classifier trained on the same data.

NOT Inception FID: the features are :class:`SmallClassifier`'s penultimate layer, so values compare only
between runs with the same classifier file; the real-vs-real floor at the same n is reported beside each
value. The numpy metrics (Frechet distance, k-NN precision / recall) live in :mod:`pifskit.metrics`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import PifsError, check_positive_int
from ..datasets import DataSpec
from ..metrics import frechet_distance, frechet_distance_from_stats, precision_recall  # re-exported
from .checkpoint import atomic_write_bytes

CLASSIFIER_NAME = "classifier.pt"


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 28
    n_classes: int = 10
    width: int = 32
    feat_dim: int = 128


class SmallClassifier(nn.Module):
    """conv(3x3) x 2 -> pool -> conv x 2 -> adaptive pool 2x2 -> Linear(feat_dim) [features] -> Linear(classes)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.body = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * w, cfg.feat_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feat_dim, cfg.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def classifier_features(model: SmallClassifier, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Penultimate features (N, feat_dim) of images (N, C, H, W) in [-1, 1]."""
    model.eval()
    x = np.asarray(images, dtype=np.float32)
    cfg = model.config
    if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise PifsError(f"classifier expects images (N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                        f"got {x.shape}")
    return np.concatenate([model.features(torch.from_numpy(x[i:i + batch_size])).numpy()
                           for i in range(0, len(x), batch_size)]).astype(np.float64)


def _floor(model, train_images: np.ndarray, ref_images: np.ndarray, n: int, seed: int, k: int) -> dict:
    """Real vs real at size n: a random train subset against the held-out reference set."""
    rng = np.random.default_rng(seed)
    sub = train_images[rng.choice(len(train_images), size=min(n, len(train_images)), replace=False)]
    fa, fb = classifier_features(model, sub), classifier_features(model, ref_images)
    p, r = precision_recall(fb, fa, k)
    return {"n": int(len(sub)), "n_ref": int(len(ref_images)), "frechet_distance": frechet_distance(fa, fb),
            "precision": p, "recall": r}


def train_classifier(data: DataSpec, out_dir, *, epochs: int = 0, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, k: int = 3, progress: bool = True) -> dict:
    """Train :class:`SmallClassifier` on the train split; evaluate accuracy and the metric floor on held-out.

    ``epochs = 0``: enough passes for ~600 optimiser steps, between 3 and 50.
    """
    train, held = data.load()
    if epochs == 0:
        epochs = int(min(50, max(3, np.ceil(600 / max(1, np.ceil(len(train) / batch_size))))))
    epochs = check_positive_int(epochs, "epochs")
    if train.labels is None or (train.labels < 0).any():
        raise PifsError("the classifier needs labelled data (digits, mnist, fashion-mnist, cifar10, or a folder "
                        "with one sub-folder per class)")
    if held is None or len(held) < 2 * (k + 1):
        raise PifsError("the classifier needs a held-out split (--holdout > 0) for its accuracy and floor")
    C, H, W = train.image_shape
    n_classes = int(max(train.labels.max(), held.labels.max())) + 1
    torch.manual_seed(seed)
    model = SmallClassifier(ClassifierConfig(C, H, n_classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            j = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(held.images[i:i + 512])).argmax(1)
                          for i in range(0, len(held), 512)]).numpy()
    acc = float(np.mean(pred == held.labels))
    floor = _floor(model, train.images, held.images, len(held), seed, k)
    out = Path(out_dir)
    info = {"config": asdict(model.config), "data": data.to_dict(), "heldout_accuracy": acc, "floor": floor,
            "epochs": epochs, "seed": seed, "k": k, "seconds": time.perf_counter() - t0,
            "note": "Frechet distance on this classifier's penultimate features; NOT Inception FID"}
    path = out / CLASSIFIER_NAME
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: torch.save({"format": "pifskit-classifier", "state": model.state_dict(),
                                                   **info}, f))
    atomic_write_bytes(out / "classifier.json", lambda f: f.write(json.dumps(info, indent=1).encode()))
    return {"path": str(path), **info}


def load_classifier(path) -> tuple[SmallClassifier, dict]:
    p = Path(path)
    p = p / CLASSIFIER_NAME if p.is_dir() else p
    if not p.is_file():
        raise PifsError(f"classifier not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PifsError(f"{p}: unreadable classifier ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != "pifskit-classifier":
        raise PifsError(f"{p}: not a pifskit classifier file")
    model = SmallClassifier(ClassifierConfig(**ck["config"]))
    model.load_state_dict(ck["state"])
    model.eval()
    return model, {k: v for k, v in ck.items() if k not in ("state", "format")}


def quality_report(classifier_path, samples: np.ndarray, seed: int = 0) -> dict:
    """Metric of ``samples`` against the classifier's held-out split, with the real-vs-real floor at the same n."""
    model, info = load_classifier(classifier_path)
    train, held = DataSpec.from_dict(info["data"]).load()
    k = int(info.get("k", 3))
    fs, fr = classifier_features(model, samples), classifier_features(model, held.images)
    p, r = precision_recall(fr, fs, k)
    with torch.no_grad():
        labels = model.head(torch.from_numpy(fs).float()).argmax(1).numpy()
    hist = np.bincount(labels, minlength=model.config.n_classes) / len(labels)
    return {"n": int(len(samples)), "n_ref": int(len(held)), "frechet_distance": frechet_distance(fs, fr),
            "precision": p, "recall": r, "floor": _floor(model, train.images, held.images, len(samples), seed, k),
            "class_histogram": hist.tolist(), "classifier": str(classifier_path),
            "note": "classifier-feature Frechet distance (NOT Inception FID); floor = real vs real at the same n"}
