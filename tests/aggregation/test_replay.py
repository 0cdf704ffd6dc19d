"""The replay of an export with the stopping rule (aggregation/replay.py) on a small hand-made export."""

import numpy as np
import pandas as pd

from clumptool.aggregation.pipeline import AggregateOptions
from clumptool.aggregation.replay import adaptive_stops, queue_rank, replay_export

CLUMPS = [(120.0, 140.0), (260.0, 230.0)]
N = 10  # volunteers per galaxy in the export


def _export(builder, tmp_path) -> pd.DataFrame:
    """Volunteers v0..v9 each classify every galaxy in turn (so each galaxy's queue is in volunteer order):
    galaxies 100..129 and 1 are obvious (everyone marks the same two clumps), galaxy 2 is contested (one
    volunteer in three marks a spot the others do not see)."""
    rng = np.random.default_rng(0)
    for v in range(N):
        for sid in [*range(100, 130), 1]:
            builder.add(sid, f"v{v}", [(float(x + rng.normal(0, 1.0)), float(y + rng.normal(0, 1.0)), 0)
                                       for x, y in CLUMPS])
        spot = [(float(200 + rng.normal(0, 1.0)), float(200 + rng.normal(0, 1.0)), 0)] if v % 3 == 0 else []
        builder.add(2, f"v{v}", spot)
    return pd.read_csv(builder.write(tmp_path / "export.csv"), dtype=str, keep_default_na=False)


def test_an_obvious_galaxy_finishes_early_a_contested_one_does_not(export_builder, tmp_path):
    cls = _export(export_builder, tmp_path)
    r = replay_export(cls, options=AggregateOptions(), tmp=tmp_path)
    assert r.cap == N and r.n_available == 32 * N
    assert (r.available == N).all()
    assert 1 in r.finished and r.used[1] == 3, r.used[1]   # the minimum: three agreeing volunteers suffice
    # a spot a third of the crowd marks: never finished; with 2 of 5 marking it (a galaxy stalls only after half
    # the cap), the 5 classifications left before the cap of 10 are not expected to settle it (stalled), with 35
    # left they would be: open to the end
    assert 2 not in r.finished and r.used[2] == 5 and r.stalled == {2}
    wide = replay_export(cls, options=AggregateOptions(), tmp=tmp_path, cap=40)
    assert 2 not in wide.finished and wide.used[2] == N and wide.stalled == set()
    assert r.saved == r.n_available - r.n_used > 0
    assert r.n_used == int(r.used.sum()) and r.factor == r.n_available / r.n_used
    t = r.table().set_index("subject_id")
    assert t.loc[1].tolist() == [N, 3, True] and t.loc[2].tolist() == [N, 5, False]
    d = r.as_dict()
    assert d["classifications_saved"] == r.saved and d["finished"] == len(r.finished)


def test_no_galaxy_retires_before_the_minimum(export_builder, tmp_path):
    cls = _export(export_builder, tmp_path)
    r = replay_export(cls, options=AggregateOptions(min_classifications=5), tmp=tmp_path)
    assert r.used[1] == 5 and (r.used >= 5).all()


def test_adaptive_stops_freezes_retired_galaxies():
    """A galaxy retired at k keeps its first k rows in every later cut; counts never exceed the export's."""
    sid = np.array([7, 8, 7, 8, 7, 8, 7, 9])
    rank = queue_rank(pd.DataFrame({"subject_ids": sid}))
    assert rank.tolist() == [0, 0, 1, 1, 2, 2, 3, 0]
    cuts = {}

    def finished(keep, k):
        cuts[k] = keep.copy()
        return [7] if k == 2 else []

    stops, retired = adaptive_stops(sid, rank, finished, first=2, cap=4)
    assert retired == {7}
    assert stops.to_dict() == {7: 2, 8: 3, 9: 1}
    assert cuts[3].tolist() == [True, True, True, True, False, True, False, True]
