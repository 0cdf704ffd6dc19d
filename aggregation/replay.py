"""Replay an export with the stopping rule: how many classifications would each galaxy have needed?

Volunteers arrive at each galaxy one by one, in the export's order. At k = ``min_classifications``, ...,
``cap`` the export is cut (galaxies the rule already retired frozen at their count, the others cut to their
first k classifications) and aggregated with :func:`clumptool.aggregation.pipeline.aggregate`; the galaxies
the stopping rule (:mod:`clumptool.aggregation.stopping`: the subjects table's ``is_finished``) calls finished
on that cut retire at k. Deciding in rounds of k is the same as deciding after every classification for a
per-galaxy rule given the volunteers' skills (learned on the whole cut of each round).

The result says per galaxy how many classifications it used when it finished (or all it had, when it never
did), so the classifications the rule would have saved are ``available - used``. The demo prints this for its
project and ``bench/lean.py`` measures it on every simulated crowd. Pure computation apart from the cut CSV
written for ``aggregate`` into a scratch folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.galaxies import galaxy_subject_per_row
from clumptool.aggregation.pipeline import AggregateOptions, AggregationResult, aggregate

#: classifications per galaxy on Clump Scout (every galaxy was shown to about 20 volunteers)
CAP = 20

#: ``finished(keep, k)``: the galaxies the rule stops on the cut of the export's rows ``keep``: an iterable of ids
#: (all finished), or a mapping id -> finished (False: stalled, it stops unfinished)
FinishedRule = Callable[[np.ndarray, int], Iterable]


def queue_rank(cls: pd.DataFrame) -> np.ndarray:
    """Each classification's place in its galaxy's queue (0 = first), in the export's order."""
    return cls.groupby("subject_ids", sort=False).cumcount().to_numpy()


def aggregate_cut(subjects: str | os.PathLike | None, cls: pd.DataFrame, keep: np.ndarray, tmp: str | os.PathLike,
                  options: AggregateOptions, detections: str | os.PathLike | None = None) -> AggregationResult:
    """Aggregate the rows of the export ``cls`` where ``keep`` is true (written to ``tmp/cut.csv``), with the
    detector's catalogue as one more annotator when ``detections`` is given."""
    path = Path(tmp) / "cut.csv"
    cls[keep].to_csv(path, index=False)
    return aggregate(path, subjects, options=options, detections=detections)


def adaptive_stops(sid: np.ndarray, rank: np.ndarray, finished: FinishedRule, first: int,
                   cap: int = CAP) -> tuple[pd.Series, set]:
    """Each galaxy's classifications when the rule retires it (or the cap), and the retired galaxies.

    Volunteers arrive one by one in the export's order (``rank``: place in the galaxy's queue, ``sid``: its
    galaxy, per row); at k = ``first``, ..., ``cap`` the export is cut (retired galaxies frozen at their count,
    the others to their first k) and ``finished(keep, k)`` names the galaxies the rule calls finished on that
    cut. A rule that returns a mapping id -> finished also stops the galaxies it maps to False (stalled: more
    volunteers would not settle them); only the finished ones are in the returned set. The counts never exceed
    what the export holds for the galaxy."""
    available = pd.Series(sid).value_counts()
    stop = pd.Series(cap, index=available.index, dtype="int64")
    stopped: set = set()
    retired: set = set()
    for k in range(first, cap + 1):
        limit = np.where(np.isin(sid, list(stopped)), stop.reindex(sid).to_numpy(), k)
        decided = finished(rank < limit, k)
        now = [g for g in decided if g not in stopped]
        stop[now] = np.minimum(k, available.reindex(now).to_numpy())
        stopped |= set(now)
        retired |= {g for g in now if not isinstance(decided, dict) or decided[g]}
        if (available <= k).all():
            break
    return np.minimum(stop, available), retired


def rule_finished(subjects: str | os.PathLike | None, cls: pd.DataFrame, options: AggregateOptions,
                  tmp: str | os.PathLike, detections: str | os.PathLike | None = None) -> FinishedRule:
    """``finished(keep, k)`` for :func:`adaptive_stops`: aggregate the cut, the stopping rule decides.

    Returns finished (True) and stalled (False) galaxies. Only galaxies with at most k viewers on the cut count
    (a galaxy frozen earlier has already stopped)."""
    def finished(keep: np.ndarray, k: int) -> dict:
        s = aggregate_cut(subjects, cls, keep, tmp, options, detections).subjects
        stalled = s["is_stalled"] if "is_stalled" in s else False
        s = s[(s["is_finished"] | stalled) & (s["n_viewers"] <= k)]
        return dict(zip(s["subject_id"].tolist(), s["is_finished"].astype(bool).tolist(), strict=True))
    return finished


@dataclass
class Replay:
    """Per galaxy (index: subject id) the classifications the export holds and those the rule used."""

    available: pd.Series
    used: pd.Series
    finished: set
    cap: int

    @property
    def n_available(self) -> int:
        return int(self.available.sum())

    @property
    def n_used(self) -> int:
        return int(self.used.sum())

    @property
    def saved(self) -> int:
        """Volunteer classifications the rule would have saved on this export."""
        return self.n_available - self.n_used

    @property
    def factor(self) -> float:
        """How many times fewer classifications the rule needs (available / used)."""
        return self.n_available / self.n_used if self.n_used else float("nan")

    @property
    def stalled(self) -> set:
        """Galaxies the rule stopped unfinished, before their classifications ran out (more would not settle them)."""
        early = self.used.reindex(self.available.index) < self.available
        return set(self.available.index[early.to_numpy()]) - self.finished

    @property
    def mean_used_finished(self) -> float:
        """Mean classifications of the galaxies the rule finished, when they finished."""
        ids = list(self.finished)
        return float(self.used.reindex(ids).mean()) if ids else float("nan")

    def table(self) -> pd.DataFrame:
        """One row per galaxy: classifications available, used, and whether the rule finished it."""
        return pd.DataFrame({"subject_id": self.available.index, "classifications_available": self.available.values,
                             "classifications_used": self.used.reindex(self.available.index).values,
                             "finished": self.available.index.isin(list(self.finished))})

    def as_dict(self) -> dict:
        """The figures for a summary JSON."""
        return {"galaxies": int(len(self.available)), "finished": len(self.finished), "cap": self.cap,
                "classifications_available": self.n_available, "classifications_used": self.n_used,
                "stalled": len(self.stalled), "classifications_saved": self.saved, "factor": self.factor,
                "mean_classifications_when_finished": self.mean_used_finished,
                "mean_classifications_available": float(self.available.mean()) if len(self.available) else 0.0}


def replay_export(cls: pd.DataFrame, subjects: str | os.PathLike | None = None,
                  options: AggregateOptions | None = None, cap: int | None = None,
                  tmp: str | os.PathLike | None = None, detections: str | os.PathLike | None = None) -> Replay:
    """Replay the export ``cls`` (read with ``dtype=str``) one volunteer at a time with the stopping rule.

    ``cap``: the most classifications a galaxy gets (default: the most any galaxy has in the export; it is the
    retirement limit of the stalled test), so a galaxy the rule never finishes or calls stalled uses all it had. ``tmp``: scratch folder for the cuts (default: a fresh
    temporary folder). ``detections``: a ``predict`` catalogue, the detector as one more annotator."""
    options = options or AggregateOptions()
    shown = cls["subject_ids"].astype("int64")
    per_subject = shown.value_counts()
    cap = int(per_subject.max()) if cap is None and len(per_subject) else int(cap or 0)
    if cap >= 1:  # the replay's cap is the retirement limit the stalled test counts down to
        options = replace(options, retirement_limit=cap)
    # a galaxy sent back to Zooniverse is one queue, as aggregate merges its subjects (aggregation/galaxies.py)
    merge = options.read.merge_galaxies and "subject_data" in cls
    sid_series = galaxy_subject_per_row(shown, cls["subject_data"] if merge else None)
    sid = sid_series.to_numpy()
    available = pd.Series(sid).value_counts().sort_index()
    rank = sid_series.groupby(sid_series.to_numpy(), sort=False).cumcount().to_numpy()
    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        stops, retired = adaptive_stops(sid, rank, rule_finished(subjects, cls, options, scratch, detections),
                                        options.min_classifications, cap=max(cap, int(available.max()) if len(available) else 0))
    used = stops.reindex(available.index).astype("int64")
    return Replay(available=available.astype("int64"), used=used, finished=set(retired), cap=cap)
