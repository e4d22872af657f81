"""Compress a spectrum for the design criteria: distinct values, or bins in log lambda.

Every criterion evaluates smooth functions of log(lambda) (sigmoids, atan
angles), so eigenvalues that are close in log(lambda) can share one
representative: the count-weighted geometric mean of the bin. A stationary
power-law grid has only a few hundred distinct values and is used exactly;
a measured spectrum with thousands of distinct eigenvalues is binned.
"""

from __future__ import annotations

import numpy as np

from .._validate import PifsError, check_positive_int
from ..spectra import Spectrum

__all__ = ["DEFAULT_MAX_BINS", "compress_spectrum"]

#: above this many distinct positive eigenvalues, bin in log(lambda)
DEFAULT_MAX_BINS = 1024


def compress_spectrum(spectrum: Spectrum, max_bins: int = DEFAULT_MAX_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lam, count, total) of the positive eigenvalues, descending.

    lam: representative eigenvalue of each group (exact if not binned, else the
    count-weighted geometric mean of the bin); count: multiplicities;
    total: sum of the eigenvalues in the group (so sum(total) = trace exactly).
    Zero eigenvalues are dropped (they carry no variance and are never released).
    """
    if not isinstance(spectrum, Spectrum):
        raise PifsError(f"expected a pifskit Spectrum, got {type(spectrum).__name__}")
    max_bins = check_positive_int(max_bins, "max_bins")
    vals, counts = spectrum.unique
    keep = vals > 0
    vals, counts = vals[keep], counts[keep].astype(np.float64)
    if vals.size == 0:
        raise PifsError("spectrum has no positive eigenvalue")
    if vals.size <= max_bins:
        return vals.copy(), counts, vals * counts
    logv = np.log(vals)
    edges = np.linspace(logv.min(), logv.max(), max_bins + 1)
    idx = np.clip(np.searchsorted(edges, logv, side="right") - 1, 0, max_bins - 1)
    cnt = np.bincount(idx, weights=counts, minlength=max_bins)
    tot = np.bincount(idx, weights=counts * vals, minlength=max_bins)
    slog = np.bincount(idx, weights=counts * logv, minlength=max_bins)
    nz = cnt > 0
    lam = np.exp(slog[nz] / cnt[nz])
    order = np.argsort(-lam)
    return lam[order], cnt[nz][order], tot[nz][order]
