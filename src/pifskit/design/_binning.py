"""Compress a spectrum for the design criteria: distinct values, or bins in log lambda (every criterion is
smooth in log lambda, so a bin shares one representative: its count-weighted geometric mean)."""

from __future__ import annotations

import numpy as np

from .._validate import PifsError, check_positive_int
from ..spectra import Spectrum

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
