"""Consensus clumps against known truth: one-to-one matching within a radius, completeness, purity, F1.

Used by the benchmarks and tests on simulated projects, where the injected clumps are known. The matcher
(Hungarian: most matches, then least total distance) and the ratio rules are
:mod:`clumptool.common.matching`'s, the same as the detector's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clumptool.common.matching import completeness, f1_score, match_points, purity, ratio


@dataclass(frozen=True)
class MatchScores:
    n_truth: int
    n_found: int
    n_matched: int
    n_label_agree: int
    median_offset_px: float

    @property
    def completeness(self) -> float:
        """Found true clumps / true clumps; undefined (NaN, never 1.0) without any true clump."""
        return completeness(self.n_matched, self.n_truth)

    @property
    def purity(self) -> float:
        """Matched found clumps / found clumps; undefined (NaN, never 1.0) when nothing was found."""
        return purity(self.n_matched, self.n_found)

    @property
    def f1(self) -> float:
        """Undefined (NaN) without any true clump; 0 when there is truth but nothing was found."""
        return f1_score(self.n_matched, self.n_truth, self.n_found)

    @property
    def label_accuracy(self) -> float:
        return ratio(self.n_label_agree, self.n_matched)

    def as_dict(self) -> dict:
        return {"n_truth": self.n_truth, "n_found": self.n_found, "n_matched": self.n_matched,
                "completeness": self.completeness, "purity": self.purity, "f1": self.f1,
                "label_accuracy": self.label_accuracy, "median_offset_px": self.median_offset_px}


def match_to_truth(found: pd.DataFrame, truth: pd.DataFrame, radius: float = 5.0) -> MatchScores:
    """Match found clumps to true clumps one-to-one (minimum total distance) within ``radius`` pixels.

    Both tables need subject_id, x, y (and label, to score the labels).
    """
    matched = agree = 0
    offsets: list[float] = []
    found_by = {k: g for k, g in found.groupby("subject_id")}
    for sid, t in truth.groupby("subject_id"):
        f = found_by.get(sid)
        if f is None or len(f) == 0:
            continue
        col, d = match_points(f[["x", "y"]].to_numpy(), t[["x", "y"]].to_numpy(), radius, assignment="hungarian")
        fi = np.flatnonzero(col >= 0)
        ti = col[fi]
        matched += len(fi)
        offsets.extend(d[fi, ti].tolist())
        if "label" in t and "label" in f:
            agree += int((t["label"].to_numpy()[ti] == f["label"].to_numpy()[fi]).sum())
    return MatchScores(n_truth=len(truth), n_found=len(found), n_matched=matched, n_label_agree=agree,
                       median_offset_px=float(np.median(offsets)) if offsets else float("nan"))
