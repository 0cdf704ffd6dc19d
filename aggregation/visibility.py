"""Clump visibility: how likely a candidate clump is real when only some of its viewers marked it.

The skill model alone says a real clump is marked by each viewer ``w`` with probability ``1 - p_fn(w)``:
every clump is equally easy to see. Real clumps are not: faint ones (low surface-brightness contrast) are
marked by a minority of the crowd, and under the equal-visibility model a clump that 7 of 20 careful
volunteers marked looks less likely than 7 coincident false positives, so it is thrown away.

Here a real clump has a visibility ``v`` drawn from a small grid (1 = seen as often as the volunteer's skill
says, 0.3 = a third as often), with grid weights learned from the export itself (empirical Bayes, EM over all
candidate clumps weighted by their probability of being real). A viewer marks a real clump with probability
``v (1 - p_fn(w))``; a false clump (a hot spot of false clicks) with ``f(w) = p_fp(w) (1 - p_fn(w))``, the
share of w's marks that are false times w's propensity to mark. The false-positive probability of a candidate
is then ``P(FP) = L_fp / (L_fp + sum_k w_k L_real(v_k))`` with equal prior odds. With the grid ``(1,)`` this is
the equal-visibility model; for ordinary volunteers it matches the reference formula (aggregation-reference
§4.9: ``log p_fp - log(1 - p_fp)`` per marker, ``log(1 - p_fn) - log p_fn`` per non-marker), but unlike it a
random clicker (p_fp ~ 1, p_fn ~ 1) is uninformative instead of turning every spot they did not click into a
near-certain clump.

Pure numpy over flat arrays; the weights are reported in the summary so a user sees what was learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clumptool.aggregation.skill import Skills, clip_prob

DEFAULT_GRID = (1.0, 0.7, 0.5, 0.35, 0.25)


@dataclass(frozen=True)
class VisibilityFit:
    """Learned visibility weights, the share of candidates that are real, and every candidate's log odds of
    being a false positive (prior odds included)."""

    grid: tuple[float, ...]
    weights: np.ndarray
    log_odds_false_pos: np.ndarray
    prior_real: float = 0.5


def candidate_log_likelihoods(
    skills: Skills,
    view_group: np.ndarray,
    view_vol: np.ndarray,
    n_groups: int,
    cand_group: np.ndarray,
    marker_cand: np.ndarray,
    marker_vol: np.ndarray,
    grid: tuple[float, ...] = DEFAULT_GRID,
) -> tuple[np.ndarray, np.ndarray]:
    """Log likelihood of each candidate's marks and non-marks if false (``(n,)``) and if real (``(n, K)``).

    ``cand_group``: image group of each candidate; ``marker_cand`` / ``marker_vol``: one entry per mark linked
    to a candidate (at most one per volunteer and candidate). Viewers are all classifications of the group.
    """
    n = len(cand_group)
    p_fp, p_fn = clip_prob(skills.p_fp), clip_prob(skills.p_fn)
    f = clip_prob(p_fp * (1 - p_fn))
    q = 1 - p_fn
    fp_all = np.bincount(view_group, weights=np.log1p(-f)[view_vol], minlength=n_groups)
    fp_ll = fp_all[cand_group] + np.bincount(
        marker_cand, weights=(np.log(f) - np.log1p(-f))[marker_vol], minlength=n)
    real_ll = np.empty((n, len(grid)))
    for k, v in enumerate(grid):
        seen = clip_prob(v * q)
        all_k = np.bincount(view_group, weights=np.log1p(-seen)[view_vol], minlength=n_groups)
        real_ll[:, k] = all_k[cand_group] + np.bincount(
            marker_cand, weights=(np.log(seen) - np.log1p(-seen))[marker_vol], minlength=n)
    return fp_ll, real_ll


def _log_real(real_ll: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    joint = real_ll + log_w[None, :]
    top = _row_max(joint)
    log_real = top + np.log(_row_sum(np.exp(joint - top[:, None])))
    return log_real, joint - log_real[:, None]


def _row_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=1)`` column by column: numpy reduces a few columns per row far slower."""
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.maximum(out, a[:, k], out=out)
    return out


def _row_sum(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=1)`` column by column, the same additions in the same order (numpy adds fewer than 8
    numbers one by one; more columns take its own pairwise sum)."""
    if a.shape[1] >= 8:
        return a.sum(axis=1)
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.add(out, a[:, k], out=out)
    return out


def fit_visibility(
    fp_ll: np.ndarray,
    real_ll: np.ndarray,
    grid: tuple[float, ...] = DEFAULT_GRID,
    fit_mask: np.ndarray | None = None,
    iterations: int = 50,
    prior_strength: float = 1.0,
    init: VisibilityFit | None = None,
    learn_prior_real: bool = False,
    anchor: float = 0.0,
) -> VisibilityFit:
    """Learn the visibility weights (and, if ``learn_prior_real``, the share of real candidates) by EM and
    return every candidate's false-positive log odds.

    ``fit_mask`` selects the candidates the weights are learned from (default: all). Each contributes its
    responsibilities weighted by its probability of being real. The Dirichlet prior puts ``prior_strength``
    pseudo-clumps plus ``anchor`` x the expected number of real candidates at full visibility: with
    ``anchor > 0`` the faint levels can never take over however large the export (points marked by a minority
    are only taken as faint clumps when the marks themselves say so, not because the prior drifted there).
    ``init`` warm-starts the EM (the consensus refits every round).
    """
    k = len(grid)
    mask = np.ones(len(fp_ll), bool) if fit_mask is None else fit_mask
    w = np.full(k, 1.0 / k) if init is None or len(init.weights) != k else init.weights.copy()
    pi = 0.5 if init is None else init.prior_real
    full = int(np.argmax(grid))
    fp_m, real_m = fp_ll[mask], real_ll[mask]
    for _ in range(iterations if (k > 1 or learn_prior_real) else 0):
        log_real, resp = _log_real(real_m, np.log(np.maximum(w, 1e-300)))  # a weight may be 0
        lo = fp_m - log_real + (np.log1p(-pi) - np.log(pi) if learn_prior_real else 0.0)
        p_real = 1.0 / (1.0 + np.exp(np.clip(lo, -700, 700)))
        new = (p_real[:, None] * np.exp(resp)).sum(axis=0)
        new[full] += prior_strength + anchor * p_real.sum()
        new /= new.sum()
        new_pi = (p_real.sum() + 1.0) / (len(p_real) + 2.0) if learn_prior_real else pi
        done = np.allclose(new, w, atol=1e-6) and abs(new_pi - pi) < 1e-6
        w, pi = new, new_pi
        if done:
            break
    log_real, _ = _log_real(real_ll, np.log(np.maximum(w, 1e-300)))
    lo = fp_ll - log_real + (np.log1p(-pi) - np.log(pi) if learn_prior_real else 0.0)
    return VisibilityFit(tuple(grid), w, lo, float(pi))
