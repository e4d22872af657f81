"""One vocabulary for what a denoising network predicts (core: no torch).

Canonical names are diffusers' ``prediction_type`` values; the short aliases
pifskit and papers use are accepted everywhere, case-insensitively:

=================  ==========================  =====================================
canonical          aliases                     x0 estimate D(x) in VP coordinates
=================  ==========================  =====================================
``epsilon``        ``eps``                     D = (x - s eps) / a
``sample``         ``x0``                      D = network output
``v_prediction``   ``v``                       D = a x - s v   (v = a eps - s x0)
``flow``           ``velocity``, ``flow_prediction``   D = x_f - t_f u  (u = eps - x0, flow space)
=================  ==========================  =====================================

(a, s) = (sqrt(sigmoid(l)), sqrt(sigmoid(-l))) at logSNR l; t_f = s / (a + s).
"""

from __future__ import annotations

from ._validate import PifsError

__all__ = ["PREDICTION_TYPES", "PREDICTION_ALIASES", "SHORT_NAMES", "normalize_prediction", "short_prediction"]

#: canonical names (diffusers' ``prediction_type``)
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction", "flow")
#: accepted aliases -> canonical name
PREDICTION_ALIASES: dict[str, str] = {"eps": "epsilon", "x0": "sample", "v": "v_prediction",
                                      "velocity": "flow", "flow_prediction": "flow"}
#: canonical -> short name (the design module's tables use eps / x0 / v)
SHORT_NAMES: dict[str, str] = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow": "flow"}


def normalize_prediction(name: str, allowed: tuple[str, ...] = PREDICTION_TYPES) -> str:
    """Any accepted spelling (case-insensitive) -> the canonical name; ``allowed`` narrows the set."""
    if not isinstance(name, str):
        raise PifsError(f"prediction type must be a string, got {name!r}")
    key = name.strip().lower()
    canon = PREDICTION_ALIASES.get(key, key)
    if canon not in allowed:
        names = ", ".join(f"{c} ({SHORT_NAMES[c]})" if SHORT_NAMES[c] != c else c for c in allowed)
        raise PifsError(f"unknown prediction type {name!r}; accepted: {names}")
    return canon


def short_prediction(name: str, allowed: tuple[str, ...] = PREDICTION_TYPES) -> str:
    """Any accepted spelling -> the short name eps / x0 / v / flow."""
    return SHORT_NAMES[normalize_prediction(name, allowed)]
