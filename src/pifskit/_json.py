"""JSON encoding shared by the report and the CLI (always valid JSON: numpy becomes Python, non-finite
floats the strings "inf" / "-inf" / "nan"), and the text form of numbers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import PifsError


def to_jsonable(obj: Any) -> Any:
    """numpy -> Python; non-finite floats -> 'inf' / '-inf' / 'nan'."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isfinite(x):
            return x
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return obj


def dump_json(obj: Any, stream=None) -> None:
    """Write ``obj`` as one valid JSON document (plus a newline) to ``stream`` (stdout)."""
    stream = stream or sys.stdout
    json.dump(to_jsonable(obj), stream, indent=1, allow_nan=False)
    stream.write("\n")


def read_json_object(path, what: str = "") -> dict:
    """The JSON object in the file ``path``; anything else raises PifsError naming the file (``what``: its kind)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PifsError(f"cannot read {what}{path}: {exc}") from None
    if not text.strip():
        raise PifsError(f"{what}{path} is empty")
    try:
        out = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PifsError(f"cannot read {what}{path}: malformed JSON ({exc.msg} at line {exc.lineno}, "
                        f"column {exc.colno})") from None
    if not isinstance(out, dict):
        raise PifsError(f"{what}{path}: top level is not a JSON object")
    return out


def fmt_num(v: Any, spec: str = ".4g") -> str:
    """Text form of a value in tables: ``format(float(v), spec)`` for floats (and 'inf' / '-inf' / 'nan'
    strings), '-' for None, ``[a, b, ...]`` for a sequence, else ``str(v)``."""
    if v is None:
        return "-"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(fmt_num(x, spec) for x in v) + "]"
    if isinstance(v, (float, np.floating)) or (isinstance(v, str) and v in ("inf", "-inf", "nan")):
        return format(float(v), spec)
    return str(v)
