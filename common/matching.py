"""Found versus true clumps: the one-to-one matcher and the completeness / purity / F1 rules.

Used by the consensus evaluation (:mod:`clumptool.aggregation.evaluation`), the detector's metrics
(:mod:`clumptool.detection.metrics`) and the validation F1 of training, so the three report the same numbers
for the same matches.

Ratios (counts are always reported beside them):

* completeness = matched / true clumps; purity = matched / found;
* F1 = 2 matched / (true + found), the harmonic mean of the two;
* a ratio with nothing to divide by is undefined (NaN, JSON null), never 1.0: no true clump -> completeness
  undefined, nothing found -> purity undefined. F1 is undefined exactly when completeness is (no truth:
  there is nothing to recover); with truth but nothing found it is 0 (the limit of the harmonic mean as
  completeness -> 0, whatever the purity).

Matching: a pair (found i, true j) may match when ``valid[i, j]``; each found and each true clump matches at
most once. ``"greedy"`` takes the found clumps by decreasing score and gives each the best (lowest cost) free
true clump, as COCO does; ``"hungarian"`` maximises the number of matches, then minimises their total cost
(scipy's ``linear_sum_assignment``).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

ASSIGNMENTS = ("greedy", "hungarian")
_BIG = 1e12


def ratio(num: float | np.ndarray, den: float | np.ndarray) -> float | np.ndarray:
    """``num / den``, NaN (undefined) where ``den`` is 0; a float for scalars, else an array."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return float(out) if out.ndim == 0 else out


def completeness(n_matched: float | np.ndarray, n_true: float | np.ndarray) -> float | np.ndarray:
    """Matched true clumps / true clumps; NaN without any true clump."""
    return ratio(n_matched, n_true)


def purity(n_matched: float | np.ndarray, n_found: float | np.ndarray) -> float | np.ndarray:
    """Matched found clumps / found clumps; NaN when nothing was found."""
    return ratio(n_matched, n_found)


def f1_score(n_matched: float | np.ndarray, n_true: float | np.ndarray,
             n_found: float | np.ndarray) -> float | np.ndarray:
    """2 matched / (true + found); NaN without any true clump, 0 with truth but nothing found."""
    m, t, f = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n_matched, n_true, n_found)))
    out = np.where(t > 0, ratio(2 * m, t + f), np.nan)
    return float(out) if out.ndim == 0 else out


def scores_from_counts(n_true: float, n_found: float, n_matched: float) -> tuple[float, float, float]:
    """(completeness, purity, F1) of summed counts, by the module's rules."""
    return (float(completeness(n_matched, n_true)), float(purity(n_matched, n_found)),
            float(f1_score(n_matched, n_true, n_found)))


def assign_one_to_one(valid: np.ndarray, cost: np.ndarray, *, scores: np.ndarray | None = None,
                      assignment: str = "greedy") -> np.ndarray:
    """One-to-one matching of rows (found) to columns (true): for each row the matched column, or -1.

    ``valid`` (bool) and ``cost`` (lower is better) are (n_rows, n_cols). ``scores`` order the rows for the
    greedy assignment (highest first; ties keep row order); without them rows go in order.
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    valid = np.asarray(valid, dtype=bool)
    cost = np.asarray(cost, dtype=float)
    out = np.full(valid.shape[0], -1, dtype=np.int64)
    if valid.size == 0:
        return out
    if assignment == "hungarian":
        rows, cols = linear_sum_assignment(np.where(valid, cost - _BIG, 0.0))
        ok = valid[rows, cols]
        out[rows[ok]] = cols[ok]
        return out
    order = (np.arange(valid.shape[0]) if scores is None
             else np.argsort(-np.asarray(scores, dtype=float).reshape(-1), kind="stable"))
    taken = np.zeros(valid.shape[1], dtype=bool)
    for i in order:
        cand = valid[i] & ~taken
        if cand.any():
            j = int(np.argmin(np.where(cand, cost[i], np.inf)))
            out[i] = j
            taken[j] = True
    return out


def match_points(found_xy: np.ndarray, true_xy: np.ndarray, radius: float | np.ndarray, *,
                 scores: np.ndarray | None = None, assignment: str = "hungarian") -> tuple[np.ndarray, np.ndarray]:
    """Match points one-to-one within ``radius`` (scalar or one per true point).

    Returns (matched column per found point or -1, the (n_found, n_true) distances).
    """
    f = np.asarray(found_xy, dtype=float).reshape(-1, 2)
    t = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    d = np.hypot(f[:, None, 0] - t[None, :, 0], f[:, None, 1] - t[None, :, 1])
    r = np.broadcast_to(np.asarray(radius, dtype=float), (d.shape[1],))
    return assign_one_to_one(d <= r[None, :] + 1e-9, d, scores=scores, assignment=assignment), d
