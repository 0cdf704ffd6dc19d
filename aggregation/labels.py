"""Clump labels (clump / odd clump) from the volunteers' tools, each volunteer weighted by the label skill they earned.

Volunteers differ in how often they pick the wrong tool (the simulated default crowd: tool confusion drawn per
volunteer, 5-40 %), so a plain majority lets two careless marks tie three careful ones and keeps the label
uncertain for as long as the crowd splits. This is the one-coin Dawid & Skene (1979) model: volunteer ``v`` names
the true label with probability ``q_v``; a clump's log odds of being odd are the prior's plus, per mark,
``± logit(q_v)``. EM alternates the clumps' P(odd) and the volunteers' ``q_v`` (a Beta prior of
:data:`LABEL_SKILL_STRENGTH` pseudo-marks at the crowd's agreement keeps volunteers with a handful of marks near
it), learned on the marks of accepted clumps. Pure numpy over flat arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: pseudo-marks at the crowd's agreement rate in each volunteer's label-skill prior
LABEL_SKILL_STRENGTH = 10.0
#: the crowd's agreement rate is kept in this range (0.6: a crowd that barely beats a coin still says something)
CROWD_AGREEMENT_RANGE = (0.6, 0.99)
#: a volunteer's is kept in this range (0.5: a volunteer who picks tools at random has no say)
VOLUNTEER_AGREEMENT_RANGE = (0.5, 0.99)
#: the prior share of odd clumps is kept in this range
ODD_SHARE_RANGE = (0.02, 0.98)


def logit(p: np.ndarray | float) -> np.ndarray | float:
    """log(p / (1 - p)): the log odds every label vote is counted in."""
    return np.log(p) - np.log1p(-np.asarray(p)) if isinstance(p, np.ndarray) else math.log(p) - math.log1p(-p)


@dataclass(frozen=True)
class LabelVotes:
    """The humans' label evidence: per clump, the log odds of "odd" (prior included) and the resulting label
    (2 odd, 1 clump); per volunteer, the agreement rate ``q`` they earned; the crowd's rate and the prior."""

    odd_log_odds: np.ndarray
    label: np.ndarray
    volunteer_agreement: np.ndarray
    crowd_agreement: float
    prior_log_odds: float


def label_votes(vol: np.ndarray, clump: np.ndarray, odd: np.ndarray, accepted: np.ndarray, n_volunteers: int,
                iterations: int = 20) -> LabelVotes:
    """Labels of ``len(accepted)`` clumps from the marks (``vol``, ``clump``: their volunteer and clump, ``odd``:
    made with an odd tool), the volunteers' agreement rates learned on the accepted clumps' marks by EM."""
    n_clumps = len(accepted)
    vol = np.asarray(vol, np.int64)
    clump = np.asarray(clump, np.int64)
    sign = np.where(np.asarray(odd, bool), 1.0, -1.0)
    learn = np.asarray(accepted, bool)[clump]
    n_v = np.bincount(vol[learn], minlength=n_volunteers).astype(float)
    k = np.bincount(clump, weights=(sign > 0).astype(float), minlength=n_clumps)
    n = np.bincount(clump, minlength=n_clumps).astype(float)
    p_odd = np.where(n > 0, (k + 0.5) / (n + 1.0), 0.1)  # a start: the vote shares
    q_crowd, prior, q_v = 0.8, logit(0.1), np.full(n_volunteers, 0.8)
    lo = np.full(n_clumps, prior)
    for _ in range(max(iterations, 1)):
        agree = np.where(sign > 0, p_odd[clump], 1.0 - p_odd[clump])
        if learn.any():
            q_crowd = float(np.clip(agree[learn].mean(), *CROWD_AGREEMENT_RANGE))
            prior = logit(float(np.clip(p_odd[np.asarray(accepted, bool)].mean(), *ODD_SHARE_RANGE)))
        earned = np.bincount(vol[learn], weights=agree[learn], minlength=n_volunteers)
        q_v = np.clip((earned + LABEL_SKILL_STRENGTH * q_crowd) / (n_v + LABEL_SKILL_STRENGTH),
                      *VOLUNTEER_AGREEMENT_RANGE)
        lo = prior + np.bincount(clump, weights=sign * logit(q_v)[vol], minlength=n_clumps)
        p_odd = 1.0 / (1.0 + np.exp(-np.clip(lo, -700, 700)))
    return LabelVotes(odd_log_odds=lo, label=np.where(lo > 0, 2, 1), volunteer_agreement=q_v,
                      crowd_agreement=q_crowd, prior_log_odds=float(prior))
