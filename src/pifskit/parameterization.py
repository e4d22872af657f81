"""One vocabulary for what a denoising network predicts, and its scalings (core: no torch).

Canonical names are diffusers' ``prediction_type`` values (epsilon, sample, v_prediction, flow), with the
aliases eps, x0, v, velocity, flow_prediction, case-insensitive. For VP states x = a x0 + s e and network
output F (EDM's c_skip / c_out / c_in): x_in = c_in x, D(x) = c_skip x + c_out F, target t_x0 x0 + t_eps e.
Only + - * / are used on ``a`` and ``s``, so numpy arrays and torch tensors work alike. Table:
docs/core.md#predictions.
"""

from __future__ import annotations

from ._validate import PifsError

#: input spaces of a model: VP (DDPM / SD), VE (EDM, alpha = 1), rectified flow
INPUT_SPACES: tuple[str, ...] = ("vp", "ve", "flow")

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


def input_scale(space: str, a, s):
    """c_in with x_in = c_in x: 1 (vp), 1 / a (ve: x_ve = x0 + sigma e), 1 / (a + s) (flow: x_f = (1 - t_f) x0
    + t_f e)."""
    if space == "vp":
        return a * 0 + 1
    if space == "ve":
        return 1 / a
    if space == "flow":
        return 1 / (a + s)
    raise PifsError(f"unknown input space {space!r}; accepted: {', '.join(INPUT_SPACES)}")


def x0_scalings(prediction: str, a, s):
    """(c_skip, c_out) with the x0 estimate D = c_skip x + c_out F (x in VP coordinates).

    epsilon: (1 / a, -s / a); sample: (0, 1); v_prediction: (a, -s); flow: (1 / (a + s), -s / (a + s)).
    """
    p = normalize_prediction(prediction)
    if p == "epsilon":
        return 1 / a, -s / a
    if p == "sample":
        return a * 0, a * 0 + 1
    if p == "v_prediction":
        return a, -s
    r = 1 / (a + s)  # flow: D = x_f - t_f u, x_f = r x, t_f = r s
    return r, -s * r


def target_scalings(prediction: str, a, s):
    """(t_x0, t_eps) with the regression target t_x0 x0 + t_eps e.

    epsilon: (0, 1); sample: (1, 0); v_prediction: (-s, a) (v = a e - s x0); flow: (-1, 1) (u = e - x0).
    """
    p = normalize_prediction(prediction)
    zero, one = a * 0, a * 0 + 1
    return {"epsilon": (zero, one), "sample": (one, zero), "v_prediction": (-s, a), "flow": (-one, one)}[p]
