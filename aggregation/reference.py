"""Vote shares learned where galaxies had their full crowd: the stopping rule's reference (``aggregate --reference``).

The stopping rule asks of every spot whether a full crowd would decide it differently, from how many of the
viewers so far marked it and a prior of how spots' vote shares fall (aggregation/stopping.py). Learned from an
export where each galaxy has had three or four volunteers, that prior cannot tell one volunteer's stray click
from a faint spot a tenth of the crowd would mark, and it held real clumps that two of four volunteers marked
for contested (bench/vote_shares.py). An earlier ``aggregate`` of galaxies that had their whole crowd (Clump
Scout's old export, or the project that trained the detector) has seen how shares really fall: every
``aggregate`` stores the prior it learned in its ``summary.json`` (``stopping``), and ``--reference`` reads it
back from there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.stopping import THETA_GRID, candidate_vote_counts, vote_share_prior
from clumptool.common.errors import ClumptoolError


@dataclass(frozen=True)
class VoteShares:
    """A prior of spots' vote shares over THETA_GRID, and what it was learned from."""

    prior: np.ndarray
    candidates: int  # spots it was learned from
    median_viewers: float  # classifications per galaxy there
    source: str  # "this export", or the reference folder

    def as_dict(self) -> dict:
        """The summary's ``stopping`` block (what :func:`read_reference` reads back)."""
        return {"vote_shares_from": self.source, "vote_share_candidates": self.candidates,
                "vote_share_median_viewers": self.median_viewers,
                "vote_share_grid": [float(t) for t in THETA_GRID],
                "vote_share_prior": [float(w) for w in self.prior]}


def learn_vote_shares(subjects: pd.DataFrame, clumps: pd.DataFrame, marks: pd.DataFrame | None,
                      source: str = "this export") -> VoteShares:
    """The prior the stopping rule learns from these consensus tables (clumpscout's clumps and marks)."""
    m, n = candidate_vote_counts(subjects, clumps, marks)
    viewers = pd.to_numeric(subjects["n_viewers"], errors="coerce")
    viewers = viewers[viewers > 0]
    return VoteShares(prior=vote_share_prior(m, n), candidates=int(len(m)),
                      median_viewers=float(viewers.median()) if len(viewers) else 0.0, source=source)


def read_reference(folder: str | os.PathLike) -> VoteShares:
    """The prior stored by an earlier ``aggregate`` (its output folder), checked before any work."""
    path = Path(folder) / "summary.json"
    what = f"--reference {folder}"
    if not Path(folder).is_dir():
        raise ClumptoolError(f"{what}: no such folder; give the output folder (--out) of an earlier aggregate "
                             "of galaxies that had their full crowd")
    try:
        block = json.loads(path.read_text(encoding="utf-8")).get("stopping")
    except FileNotFoundError:
        raise ClumptoolError(f"{what}: no summary.json; give the output folder (--out) of an earlier "
                             "aggregate") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise ClumptoolError(f"{what}: summary.json cannot be read ({exc})") from None
    if not isinstance(block, dict) or "vote_share_prior" not in block:
        raise ClumptoolError(f"{what}: summary.json holds no learned vote shares (written by an older clumptool, "
                             "or by --method dbscan/hdbscan): aggregate those galaxies again with this version")
    try:
        grid = np.asarray(block["vote_share_grid"], float)
        prior = np.asarray(block["vote_share_prior"], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise ClumptoolError(f"{what}: summary.json's vote shares are damaged ({exc})") from None
    if grid.shape != THETA_GRID.shape or not np.allclose(grid, THETA_GRID, rtol=0, atol=1e-9):
        raise ClumptoolError(f"{what}: its vote shares are on another grid (another clumptool version): aggregate "
                             "those galaxies again with this version")
    if prior.shape != THETA_GRID.shape or not np.isfinite(prior).all() or (prior < 0).any() or prior.sum() <= 0:
        raise ClumptoolError(f"{what}: summary.json's vote-share prior is not a distribution")
    return VoteShares(prior=prior / prior.sum(), candidates=int(block.get("vote_share_candidates", 0)),
                      median_viewers=float(block.get("vote_share_median_viewers", 0.0)), source=str(folder))
