"""Consensus clumps against known truth: one-to-one matching within a radius, completeness, purity, F1.

Used by the benchmarks and tests on simulated projects, where the injected clumps are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


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
        return self.n_matched / self.n_truth if self.n_truth else float("nan")

    @property
    def purity(self) -> float:
        """Matched found clumps / found clumps; undefined (NaN, never 1.0) when nothing was found."""
        return self.n_matched / self.n_found if self.n_found else float("nan")

    @property
    def f1(self) -> float:
        """NaN when there is neither truth nor anything found; 0 when only one of them is empty."""
        if not self.n_truth or not self.n_found:
            return float("nan") if not (self.n_truth or self.n_found) else 0.0
        c, p = self.completeness, self.purity
        return 2 * c * p / (c + p) if c + p > 0 else 0.0

    @property
    def label_accuracy(self) -> float:
        return self.n_label_agree / self.n_matched if self.n_matched else float("nan")

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
        d = np.hypot(t["x"].to_numpy()[:, None] - f["x"].to_numpy()[None, :],
                     t["y"].to_numpy()[:, None] - f["y"].to_numpy()[None, :])
        cost = np.where(d <= radius, d, 1e6)
        rows, cols = linear_sum_assignment(cost)
        ok = d[rows, cols] <= radius
        matched += int(ok.sum())
        offsets.extend(d[rows[ok], cols[ok]].tolist())
        if "label" in t and "label" in f:
            agree += int((t["label"].to_numpy()[rows[ok]] == f["label"].to_numpy()[cols[ok]]).sum())
    return MatchScores(n_truth=len(truth), n_found=len(found), n_matched=matched, n_label_agree=agree,
                       median_offset_px=float(np.median(offsets)) if offsets else float("nan"))
