"""Plain JSON values from the numbers and containers results are built of (for summary.json, metrics.json)."""

from __future__ import annotations

import math

import numpy as np


def jsonable(obj: object) -> object:
    """``obj`` with string keys, lists for tuples, Python numbers for numpy ones and None for NaN/inf.

    ``json.dump`` would otherwise write ``NaN`` (not JSON; other readers reject it) or fail on numpy types;
    an undefined ratio is ``null`` in every file clumptool writes.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
