"""Vote shares learned where galaxies had their full crowd: the stopping rule's reference (``aggregate --reference``).

The stopping rule asks of every spot whether a full crowd would decide it differently, from how many of the
viewers so far marked it and a prior of how spots' vote shares fall (aggregation/stopping.py). Learned from an
export where each galaxy has had three or four volunteers, that prior cannot tell one volunteer's stray click
from a faint spot a tenth of the crowd would mark, and it held real clumps that two of four volunteers marked
for contested (bench/vote_shares.py). An earlier ``aggregate`` of galaxies that had their whole crowd (Clump
Scout's old export, or the project that trained the detector) has seen how shares really fall: every
``aggregate`` stores the prior it learned in its ``summary.json`` (``stopping``), and ``--reference`` reads it
back from there.

It also stores how often a spot that only one of a galaxy's first k volunteers marked was a clump by the whole
crowd's verdict (:func:`single_click_confirmations`). The binomial vote-share model reads one click of three as a
stray (P(real) 0.05 on the loop bench's 200 px project, where 29% of them were real: volunteers differ, and two
who mark little leave a real clump with one click), and with a detector annotating, a single click it did not
mark is judged by that share (aggregation/stopping.py), so a detector that says almost nothing let galaxies
retire with their faint clumps missing (bench/active_learning.py, stop 21: lean-detector labels kept 0.895-0.978
of the clumps where humans-only lean labels of the same galaxies kept 0.98-0.99). The measured rate is the floor of such a click's P(real).
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

# single clicks are measured at up to this many viewers (beyond it the rule uses this row's rate)
SINGLE_CLICK_MAX_VIEWERS = 10
# fewer single-click spots than this at some k: no rate there (the rule keeps its vote share alone)
SINGLE_CLICK_MIN_SPOTS = 20


@dataclass(frozen=True)
class VoteShares:
    """A prior of spots' vote shares over THETA_GRID, and what it was learned from."""

    prior: np.ndarray
    candidates: int  # spots it was learned from
    median_viewers: float  # classifications per galaxy there
    source: str  # "this export", or the reference folder
    # row k (1..SINGLE_CLICK_MAX_VIEWERS): spots one of the first k volunteers marked, and how many the whole
    # crowd accepted (single_click_confirmations); None: not measured (an older reference)
    single_clicks: np.ndarray | None = None

    def single_click_real(self) -> np.ndarray | None:
        """P(real) of a spot one of k viewers marked, per k (index k; NaN where too few were measured), or None."""
        return None if self.single_clicks is None else single_click_real(self.single_clicks)

    def as_dict(self) -> dict:
        """The summary's ``stopping`` block (what :func:`read_reference` reads back)."""
        return {"vote_shares_from": self.source, "vote_share_candidates": self.candidates,
                "vote_share_median_viewers": self.median_viewers,
                "vote_share_grid": [float(t) for t in THETA_GRID],
                "vote_share_prior": [float(w) for w in self.prior],
                **({} if self.single_clicks is None else
                   {"single_click_spots": [int(v) for v in self.single_clicks[:, 0]],
                    "single_click_confirmed": [int(v) for v in self.single_clicks[:, 1]]})}


def learn_vote_shares(subjects: pd.DataFrame, clumps: pd.DataFrame, marks: pd.DataFrame | None,
                      source: str = "this export", classifications: pd.DataFrame | None = None) -> VoteShares:
    """The prior the stopping rule learns from these consensus tables (clumpscout's clumps and marks), and, given
    the export's ``classifications`` (in arrival order), the single clicks' confirmations."""
    m, n = candidate_vote_counts(subjects, clumps, marks)
    viewers = pd.to_numeric(subjects["n_viewers"], errors="coerce")
    viewers = viewers[viewers > 0]
    singles = (None if classifications is None or marks is None or "clump_id" not in marks
               else single_click_confirmations(classifications, marks, clumps))
    return VoteShares(prior=vote_share_prior(m, n), candidates=int(len(m)),
                      median_viewers=float(viewers.median()) if len(viewers) else 0.0, source=source,
                      single_clicks=singles)


def single_click_confirmations(classifications: pd.DataFrame, marks: pd.DataFrame, clumps: pd.DataFrame,
                               max_viewers: int = SINGLE_CLICK_MAX_VIEWERS) -> np.ndarray:
    """Per k = 1..``max_viewers`` (row k): the spots exactly one of a galaxy's first k volunteers marked, and how
    many of them the consensus of all its volunteers accepted, over the galaxies that had at least 2k.

    ``classifications`` in arrival order (the export's; the detector's pseudo-classifications, negative ids,
    are left out), ``marks`` with their ``clump_id`` (< 0: a lone mark, a spot nobody else marked, never
    accepted). A spot is one of the whole crowd's candidates; a volunteer's several marks on it count once."""
    human = classifications[classifications["classification_id"].to_numpy() >= 0]
    rank = pd.Series(human.groupby("subject_id", sort=False).cumcount().to_numpy(),
                     index=human["classification_id"].to_numpy())
    rank = rank[~rank.index.duplicated()]
    viewers = human.groupby("subject_id").size()
    mk = marks[marks["classification_id"].isin(rank.index)]
    cid = mk["clump_id"].to_numpy()
    spot = np.where(cid >= 0, cid, -1 - np.arange(len(mk)))  # every lone mark its own spot
    accepted = clumps[clumps["accepted"].to_numpy(bool)]
    table = pd.DataFrame({"subject_id": mk["subject_id"].to_numpy(), "spot": spot,
                          "classification_id": mk["classification_id"].to_numpy(),
                          "rank": rank.reindex(mk["classification_id"]).to_numpy(),
                          "viewers": viewers.reindex(mk["subject_id"]).to_numpy()})
    # per spot, the arrival ranks of its first and second distinct markers: it is a single click at k when the
    # first came before k and the second (if any) did not
    table = table.drop_duplicates(["subject_id", "spot", "classification_id"]).sort_values(
        ["subject_id", "spot", "rank"], kind="stable")
    order = table.groupby(["subject_id", "spot"], sort=False).cumcount().to_numpy()
    first = table[order == 0].set_index(["subject_id", "spot"])
    second = table[order == 1].set_index(["subject_id", "spot"])["rank"]
    r1, views = first["rank"].to_numpy(float), first["viewers"].to_numpy(float)
    r2 = second.reindex(first.index).to_numpy(float)
    r2 = np.where(np.isnan(r2), np.inf, r2)
    keys = first.index
    confirmed = keys.isin(pd.MultiIndex.from_arrays([accepted["subject_id"].to_numpy(),
                                                     accepted["clump_id"].to_numpy()])) if len(keys) else np.zeros(0, bool)
    out = np.zeros((max_viewers + 1, 2), dtype="int64")
    for k in range(1, max_viewers + 1):
        single = (r1 < k) & (r2 >= k) & (views >= 2 * k)
        out[k] = int(single.sum()), int((single & confirmed).sum())
    return out


def single_click_real(counts: np.ndarray, min_spots: int = SINGLE_CLICK_MIN_SPOTS) -> np.ndarray:
    """Laplace-smoothed share of single clicks the whole crowd confirmed, per k (NaN under ``min_spots``)."""
    counts = np.asarray(counts, float)
    rate = (counts[:, 1] + 1.0) / (counts[:, 0] + 2.0)
    return np.where(counts[:, 0] >= min_spots, rate, np.nan)


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
    singles = None
    if "single_click_spots" in block:
        try:
            singles = np.column_stack([np.asarray(block["single_click_spots"], "int64"),
                                       np.asarray(block["single_click_confirmed"], "int64")])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClumptoolError(f"{what}: summary.json's single-click counts are damaged ({exc})") from None
        if (singles < 0).any() or (singles[:, 1] > singles[:, 0]).any():
            raise ClumptoolError(f"{what}: summary.json's single-click counts are not counts (confirmed <= spots)")
    return VoteShares(prior=prior / prior.sum(), candidates=int(block.get("vote_share_candidates", 0)),
                      median_viewers=float(block.get("vote_share_median_viewers", 0.0)), source=str(folder),
                      single_clicks=singles)


def single_click_rates(reference: VoteShares | None, own: VoteShares | None, first: int = 3) -> np.ndarray | None:
    """The single clicks' measured P(real) per k the rule uses: the reference's, else this export's own (its
    galaxies with at least 2k viewers; none in a lean export), whichever measured k = ``first`` (the fewest
    classifications a galaxy can finish with), else None."""
    for shares in (reference, own):
        rates = None if shares is None else shares.single_click_real()
        if rates is not None and np.isfinite(rates[min(max(first, 1), len(rates) - 1)]):
            return rates
    return None
