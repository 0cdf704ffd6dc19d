"""The volunteer model: per-volunteer false-positive rate, false-negative rate and click scatter.

In the spirit of the Clump Scout aggregator (Dickinson et al. 2022, after Branson et al. 2017), with the
reference implementation's defects fixed (aggregation-reference §4.17):

* every volunteer ``w`` has ``p_fp(w)`` (probability that a mark is not on a real clump), ``p_fn(w)``
  (probability of missing a real clump that they saw) and ``s2(w)`` (per-axis variance of their clicks
  about the clump centre, in pixels^2), each with a conjugate prior (Beta, Beta, scaled-inverse-chi^2);
* the same likelihood drives the assignment costs and the M-step (no d^4 in one and d^2 in the other, D5);
* empty classifications count as viewers, never as false-positive marks (D11);
* the M-step is the exact maximum a posteriori update given the assignment, so the alternation can only
  improve the objective; the caller still keeps the best iterate (D6);
* immutable configuration (D1-D3).

All functions here are pure numpy over flat arrays indexed by a dense volunteer id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-9


@dataclass(frozen=True)
class SkillPriors:
    """Conjugate priors of the volunteer skills.

    Defaults are weaker than the reference's (p_fp 0.01 with 500 pseudo-marks pins every volunteer near 0.01
    and hides random clickers); they are still strong enough to keep volunteers with a handful of
    classifications near the crowd's typical skill.
    """

    fp_mean: float = 0.1
    fp_strength: float = 20.0
    fn_mean: float = 0.2
    fn_strength: float = 10.0
    scatter_px: float = 2.5
    scatter_dof: float = 10.0

    def __post_init__(self) -> None:
        for name in ("fp_mean", "fn_mean"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        for name in ("fp_strength", "fn_strength", "scatter_px", "scatter_dof"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        # MAP updates need Beta parameters >= 1
        for m, s, name in ((self.fp_mean, self.fp_strength, "fp"), (self.fn_mean, self.fn_strength, "fn")):
            if m * s < 1.0 or (1 - m) * s < 1.0:
                raise ValueError(f"{name}_mean x {name}_strength and (1 - {name}_mean) x {name}_strength must be >= 1")

    @property
    def fp_ab(self) -> tuple[float, float]:
        return self.fp_mean * self.fp_strength, (1 - self.fp_mean) * self.fp_strength

    @property
    def fn_ab(self) -> tuple[float, float]:
        return self.fn_mean * self.fn_strength, (1 - self.fn_mean) * self.fn_strength


@dataclass
class Skills:
    """Skill arrays, one entry per volunteer."""

    p_fp: np.ndarray
    p_fn: np.ndarray
    s2: np.ndarray

    @classmethod
    def from_priors(cls, n_volunteers: int, priors: SkillPriors) -> Skills:
        a, b = priors.fp_ab
        c, d = priors.fn_ab
        return cls(
            p_fp=np.full(n_volunteers, (a - 1) / (a + b - 2) if a + b > 2 else priors.fp_mean),
            p_fn=np.full(n_volunteers, (c - 1) / (c + d - 2) if c + d > 2 else priors.fn_mean),
            s2=np.full(n_volunteers, priors.scatter_px**2),
        )

    def copy(self) -> Skills:
        return Skills(self.p_fp.copy(), self.p_fn.copy(), self.s2.copy())


@dataclass
class SkillCounts:
    """Sufficient statistics of the M-step, per volunteer."""

    n_marks: np.ndarray
    n_false_pos: np.ndarray
    n_clumps_seen: np.ndarray
    n_clumps_missed: np.ndarray
    n_matched: np.ndarray
    sum_d2: np.ndarray


def clip_prob(p: np.ndarray) -> np.ndarray:
    return np.clip(p, 1e-6, 1 - 1e-6)


def link_costs(skills: Skills, vol: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Cost (negative log-likelihood change) of linking each mark to a clump at squared distance ``d2``.

    Linking mark j of volunteer w to clump g, instead of calling it a false positive while w missed g,
    changes the negative log-likelihood by ``c_j - e_j`` with this ``c_j`` and ``e_j`` from
    :func:`false_pos_costs`: c_j = -log[(1 - p_fp)(1 - p_fn) N2(d; s2)] + log p_fn.
    """
    # the per-volunteer terms once per volunteer, then per mark (the same operations in the same order)
    p_fp, p_fn, s2 = clip_prob(skills.p_fp), clip_prob(skills.p_fn), skills.s2
    lead = -np.log1p(-p_fp) - np.log1p(-p_fn) + np.log(p_fn)
    return lead[vol] + d2 / (2 * s2)[vol] + np.log(2 * np.pi * s2)[vol]


def false_pos_costs(skills: Skills, vol: np.ndarray, log_area: np.ndarray) -> np.ndarray:
    """Cost of declaring each mark a false positive: -log[p_fp(w) / area] (uniform over the image)."""
    return -np.log(clip_prob(skills.p_fp[vol])) + log_area


def open_costs(skills: Skills, view_group: np.ndarray, view_vol: np.ndarray, n_groups: int) -> np.ndarray:
    """Cost of a clump existing in each image group: every viewer missed it, sum of -log p_fn."""
    return np.bincount(view_group, weights=-np.log(clip_prob(skills.p_fn[view_vol])), minlength=n_groups)


def m_step(counts: SkillCounts, priors: SkillPriors) -> Skills:
    """Exact MAP skills given the assignment's sufficient statistics."""
    a, b = priors.fp_ab
    p_fp = (a - 1 + counts.n_false_pos) / (a + b - 2 + counts.n_marks)
    c, d = priors.fn_ab
    p_fn = (c - 1 + counts.n_clumps_missed) / (c + d - 2 + counts.n_clumps_seen)
    nu0, s0sq = priors.scatter_dof, priors.scatter_px**2
    # 2-D Gaussian clicks: each matched mark carries two squared deviations
    s2 = (nu0 * s0sq + counts.sum_d2) / (nu0 + 2 * counts.n_matched + 2)
    return Skills(p_fp=clip_prob(p_fp), p_fn=clip_prob(p_fn), s2=np.maximum(s2, 1e-3))


def log_prior(skills: Skills, priors: SkillPriors) -> float:
    """Log prior density of all skills (up to a constant)."""
    a, b = priors.fp_ab
    c, d = priors.fn_ab
    nu0, s0sq = priors.scatter_dof, priors.scatter_px**2
    p_fp, p_fn, s2 = clip_prob(skills.p_fp), clip_prob(skills.p_fn), skills.s2
    lp = (a - 1) * np.log(p_fp) + (b - 1) * np.log1p(-p_fp)
    lp += (c - 1) * np.log(p_fn) + (d - 1) * np.log1p(-p_fn)
    lp += -(nu0 / 2 + 1) * np.log(s2) - nu0 * s0sq / (2 * s2)
    return float(lp.sum())

