"""Results become plain JSON: numpy numbers as Python ones, NaN/inf as null (never the invalid NaN)."""

import json

import numpy as np

from clumptool.common.jsonable import jsonable


def test_jsonable():
    obj = {1: (np.float64(0.5), np.int64(3)), "nan": float("nan"), "inf": np.float32("inf"),
           "arr": np.array([1.0, np.nan]), "nested": [{"x": None, "s": "a"}]}
    out = jsonable(obj)
    assert out == {"1": [0.5, 3], "nan": None, "inf": None, "arr": [1.0, None],
                   "nested": [{"x": None, "s": "a"}]}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
