"""The PCA spectrum of a data set (``pifskit design steps --data SPEC``): any
:func:`pifskit.datasets.parse_data_spec` spec or ``npz:PATH[::KEY]`` (samples, one per row after flattening;
key ``images``/``x``/``X``/``data``/the first array by default); lambda_k = s_k^2 / (n - 1) of the centred data
(:func:`pifskit.spectra.from_data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._validate import PifsError
from ..spectra import Spectrum, from_data


def _npz(path: str, key: str | None) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise PifsError(f"npz file not found: {path}")
    with np.load(p) as z:
        names = list(z.files)
        if not names:
            raise PifsError(f"{path} holds no array")
        if key is None:
            key = next((k for k in ("images", "x", "X", "data") if k in names), names[0])
        if key not in names:
            raise PifsError(f"{path} has no array {key!r}; it has {', '.join(names)}")
        return np.asarray(z[key])


def data_spectrum(spec: str, max_samples: int = 20000, seed: int = 0) -> Spectrum:
    """PCA spectrum of the data set ``spec`` (at most ``max_samples`` rows, a fixed random subset)."""
    if not isinstance(spec, str) or not spec:
        raise PifsError("--data needs a spec, e.g. digits, mnist:DIR, folder:DIR, npz:PATH")
    if spec.startswith("npz:"):
        rest = spec[4:]
        path, _, key = rest.partition("::") if "::" in rest else (rest, "", "")
        X = _npz(path, key or None)
        name = f"npz {Path(path).name}"
    else:
        from ..datasets import load_dataset

        ds = load_dataset(spec)
        X, name = ds.images, ds.name
    if X.shape[0] > max_samples:
        X = X[np.sort(np.random.default_rng(seed).choice(X.shape[0], max_samples, replace=False))]
    return from_data(X, name=f"pca({name})")
