"""The fast paths of reading: the file cut at record ends for the workers, and the plain-point shortcut of the
mark rules, each checked against what it stands in for."""

from __future__ import annotations

import csv
import gc
import io
import itertools
import math

import numpy as np
import pytest

from clumptool.aggregation.batches import gc_paused, record_ranges
from clumptool.aggregation.rules import plain_point, read_mark

VALUES = [1.5, 0.0, 400.0, 400.5, -0.1, 7, True, None, "3", math.nan, math.inf, -math.inf]


def _marks():
    """Every combination of odd and ordinary values for the keys a point mark's click depends on."""
    keys = {"tool": [0, 1, 2, None, True, "0"], "frame": [None, 0, 1, -1, 2, 0.0], "toolType": [None, "point", "circle", ""]}
    for x, y in itertools.product(VALUES, VALUES[:6]):
        for tool, frame, tool_type in itertools.product(*keys.values()):
            mark = {"x": x, "y": y, "tool": tool, "frame": frame, "toolType": tool_type}
            yield {k: v for k, v in mark.items() if v is not None}
    yield {"x": 10.0, "y": 10.0, "toolIndex": 1, "frame": 0, "toolType": "point"}  # FEM
    yield {"x": 10.0, "y": 10.0, "tool": 0, "r": 3.0}  # a circle by its keys
    yield {"x": 10.0, "y": 10.0, "tool": 0, "width": 3.0, "height": 2.0}


@pytest.mark.parametrize("sizes", [[(400.0, 300.0)], [(400.0, 300.0), (200.0, 500.0)], [(math.nan, math.nan)], []])
@pytest.mark.parametrize("tools", [None, {0}, {0, 1}])
def test_plain_point_gives_read_marks_click_or_defers(sizes, tools):
    taken = 0
    for mark in _marks():
        click = plain_point(mark, sizes, tools)
        if click is not None:
            taken += 1
            assert click == read_mark(mark, sizes, tools), mark
    assert taken > 0


def _pieces(data: bytes, block: int, tmp_path) -> list[bytes]:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    return [data[o:o + n] for o, n in record_ranges(path, block)]


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_record_ranges_cut_only_at_record_ends(tmp_path, block):
    """Pieces are whole records (quoted newlines, doubled quotes, CRLF, no final newline), the header alone first."""
    rng = np.random.default_rng(block)
    end = "\r\n" if block % 2 else "\n"  # (a lone CR is quoted only when the line end holds one)
    rows = [["id", "text"]] + [[str(i), "".join(rng.choice(list('ab"\n,' + end), int(rng.integers(0, 30))))]
                               for i in range(60)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator=end).writerows(rows)
    data = buf.getvalue().encode()[:-1]
    pieces = _pieces(data, block, tmp_path)
    assert b"".join(pieces) == data
    assert list(csv.reader(io.StringIO(pieces[0].decode(), newline=""))) == [rows[0]]
    parsed = [r for p in pieces[1:] for r in csv.reader(io.StringIO(p.decode(), newline=""))]
    assert parsed == rows[1:]


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError
    assert gc.isenabled()
