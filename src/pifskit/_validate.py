"""Input validation shared by the numpy core: bad input raises :class:`PifsError` naming the problem
(and the accepted values of a closed set); the CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


class PifsError(ValueError):
    """Bad input to pifskit: the message names the problem."""


def as_float_array(x, name: str, *, ndim: int | None = None, allow_inf: bool = False) -> np.ndarray:
    """Convert ``x`` to a float64 array, rejecting NaN (and inf unless allowed)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PifsError(f"{name} must be numeric: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise PifsError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise PifsError(f"{name} contains NaN")
    if not allow_inf and np.isinf(arr).any():
        raise PifsError(f"{name} contains inf")
    return arr


def check_positive_int(n, name: str, *, maximum: int | None = None) -> int:
    """Return ``n`` as an int >= 1 (and <= maximum), else raise."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise PifsError(f"{name} must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise PifsError(f"{name} must be >= 1, got {n}")
    if maximum is not None and n > maximum:
        raise PifsError(f"{name} must be <= {maximum}, got {n}")
    return n


def check_choice(value: str, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    choices = list(choices)
    if value not in choices:
        raise PifsError(f"unknown {name} {value!r}; accepted: {', '.join(choices)}")
    return value


def check_int_range(n, name: str, lo: int, hi: int) -> int:
    """Return ``n`` as an int in lo..hi (bools and floats rejected), else raise."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or not lo <= int(n) <= hi:
        raise PifsError(f"{name} must be an integer in {lo}..{hi}, got {n!r}")
    return int(n)
