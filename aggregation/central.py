"""The central source: marks on the galaxy's bulge are a known kind of object, not a clump.

Real Clump Scout volunteers marked bulges (the paper's notebooks drop "bulge markings that snuck through"), and
some do it in most of their classifications. A cluster of such marks at the image centre looks like a clump
seen by a minority of the crowd. Here it is explained explicitly: every volunteer ``w`` marks the centre of an
image with their own rate ``b(w)`` (learned from how often they put a mark within ``radius`` of the centre on
images where the centre holds no accepted clump; Beta prior), and a candidate whose centre lies within
``radius`` of the image centre is also weighed as "the central source": its markers marked the centre as they
always do, its non-markers did not. A real clump at the centre is still a clump: the volunteers who mark it are
not the ones who mark every centre, so the central-source explanation does not fit it.

Pure numpy over flat arrays.
"""

from __future__ import annotations

import numpy as np

from clumptool.aggregation.skill import clip_prob

CENTRE_PRIOR_MEAN = 0.05  # a volunteer marks the centre of 1 image in 20 unless their marks say otherwise
CENTRE_PRIOR_STRENGTH = 20.0


def near_centre(x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray,
                radius_frac: float) -> np.ndarray:
    """True where a point lies within ``radius_frac`` x the image's smaller side of the image centre."""
    r = radius_frac * np.minimum(width, height)
    return np.hypot(x - width / 2, y - height / 2) <= r


def centre_rates(view_vol: np.ndarray, mark_vol: np.ndarray, central_mark_weight: np.ndarray,
                 n_volunteers: int) -> np.ndarray:
    """Each volunteer's rate of marking the image centre: weighted central marks / classifications (Beta MAP).

    ``central_mark_weight``: per mark, 1 - P(it is on a real clump) for marks near the centre, else 0.
    """
    a = CENTRE_PRIOR_MEAN * CENTRE_PRIOR_STRENGTH
    b = CENTRE_PRIOR_STRENGTH - a
    marked = np.bincount(mark_vol, weights=central_mark_weight, minlength=n_volunteers)
    views = np.bincount(view_vol, minlength=n_volunteers).astype(float)
    return clip_prob((a + np.minimum(marked, views)) / (a + b + views))


def central_log_likelihoods(rate: np.ndarray, view_group: np.ndarray, view_vol: np.ndarray, n_groups: int,
                            cand_group: np.ndarray, marker_cand: np.ndarray, marker_vol: np.ndarray) -> np.ndarray:
    """Log likelihood of each candidate's marks and non-marks if it is the central source."""
    n = len(cand_group)
    all_ = np.bincount(view_group, weights=np.log1p(-rate)[view_vol], minlength=n_groups)
    return all_[cand_group] + np.bincount(
        marker_cand, weights=(np.log(rate) - np.log1p(-rate))[marker_vol], minlength=n)
