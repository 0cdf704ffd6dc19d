"""The per-galaxy stopping rule of lean crowdsourcing (issue 12): is this galaxy's consensus finished?

A galaxy is shown to volunteers until its consensus is probably right. "Probably right" is measured as the
*expected number of errors* in its consensus, from the posterior of the consensus model:

* expected missed clumps: rejected clusters and lone marks that a larger crowd would call real, plus the clumps
  that every viewer missed (the larger of the model's estimate, which multiplies the viewers' miss rates, and
  the clump rate x E[(1 - share)^n] over the real clumps' vote shares: faint clumps are missed together);
* expected false clumps: the sum over the accepted clumps of P(false);
* expected wrong labels: the sum over accepted clumps of 1 - P(its label), where P(label) is the posterior of
  the humans' label given its marks' tools, each weighted by its volunteer's label skill (aggregation/labels.py:
  the clumps table's ``odd_log_odds``), and the detector's label vote.

Each candidate's P(false) (or P(real), for rejected ones) is the larger of the consensus model's and the
probability that a larger crowd would reverse it from its vote share (m of n viewers marked it, a zero-truncated
binomial since only marked spots are candidates; the prior over vote shares is learned from every candidate of
the export, see :func:`flip_probabilities`). The model assumes
false marks are independent, so two of four volunteers marking one star look like a clump with certainty; the
vote share keeps such a galaxy open (issue 12 reports the model's own finished test calling galaxies finished,
at 6 volunteers, whose consensus purity was 0.66).

With a detector as an annotator (aggregation/machine.py) its evidence updates these probabilities, a single
human click it did not mark is judged by its vote share and the detector's silence alone, and its labels vote
in the label probability at the agreement rate it earned (:func:`expected_errors`, :func:`label_probabilities`).
Where it has been measured how often a spot one of the first k volunteers marked turned out real (a full crowd's
export, ``aggregate --reference``; aggregation/reference.py), a single click's P(real) is at least that rate:
the vote share alone is far too sure such a click is a stray when volunteers differ (0.05 for one click of three
where 29% were real), and with a detector it is what judges a click the detector did not mark. Without a
detector the crowd model's own, larger estimate stays (0.9 or more; replacing it by the measured rate finished
tool-confusion galaxies at completeness 0.947, bench/lean.py, stop 21).

A galaxy is *finished* when the sum is below ``retire_below`` AND it had at least ``min_classifications``
human classifications (a small crowd's skills and visibility say little about one galaxy: the minimum keeps a
lucky pair of volunteers from retiring it). A galaxy that is not finished is *stalled* when the classifications
left before the workflow's retirement limit are expected neither to finish it nor to remove ``retire_below`` of
its errors (a preposterior over the next viewers' marks, :func:`settled_error_after`, :func:`label_error_after`):
a spot a third of the crowd marks stays a coin toss however many more look, and Clump Scout spent the tail of its
20 classifications on such galaxies. Stalled galaxies are not finished: ``retire`` sends them only with
``--stalled`` (reason ``other``), and ``select-next-batch`` does not send them back for more. Pure computation: tables in, tables out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clumptool.aggregation.galaxies import EARLIER_VIEWERS_COLUMN
from clumptool.aggregation.labels import logit
from clumptool.aggregation.subjects import RETIRED_COLUMN
from clumptool.common.errors import ClumptoolError

# chosen with bench/lean.py (its docstring has the tables): of 0.05, 0.1 and 0.2, the largest whose finished
# galaxies kept completeness and purity >= 0.97 against truth on every simulated crowd, at 6 volunteers as at 20.
# Since stop 20, 0.2 keeps that too (>= 0.976 with and without a detector: every crowd on seeds 1-2, default and
# tool confusion on seeds 3-4) and saves 0.4-1.4 more classifications per galaxy with a detector (0.2-1.2
# without), but on the tool-confusion crowd the galaxies it finishes have their labels right less often (0.77-0.96
# against 0.86-0.99), and in bench/active_learning.py's project (200 px, a detector trained on 30-70 galaxies) the lean-detector
# labels at 0.2 kept 0.94 of the clumps (stop 21): the default stays careful; `--retire-below 0.2` is the lean setting (at 0.3 the galaxies
# finished at 6 volunteers of the tool-confusion crowd fell to purity 0.955)
DEFAULT_RETIRE_BELOW = 0.1
DEFAULT_MIN_CLASSIFICATIONS = 3
# the share of volunteers marking a spot below which the crowd calls it false (see flip_probabilities)
DEFAULT_VOTE_SPLIT = 0.3
# classifications a galaxy gets at most (the workflow's retirement limit; Clump Scout showed each to ~20)
DEFAULT_RETIREMENT_LIMIT = 20
IN_PROGRESS_COLUMN = "in_progress"  # not finished, under half the retirement limit: no training label yet
AWAITING_COLUMN = "awaiting_volunteers"  # not finished nor stalled, under the limit: the workflow still shows it
STOPPING_COLUMNS = ("expected_missed", "expected_false", "expected_wrong_labels", "expected_errors",
                    "expected_gain", "is_finished", "is_stalled", IN_PROGRESS_COLUMN, AWAITING_COLUMN,
                    "finished_reason")


def check_stopping_options(retire_below: float, min_classifications: int,
                           retirement_limit: int = DEFAULT_RETIREMENT_LIMIT) -> list[str]:
    """Problems with the options, each naming the option and what it takes (empty when fine)."""
    problems = []
    if not (isinstance(retire_below, (int, float)) and math.isfinite(retire_below) and retire_below > 0):
        problems.append(f"--retire-below {retire_below}: must be a positive number of expected errors per galaxy "
                        f"(default {DEFAULT_RETIRE_BELOW:g})")
    if not (isinstance(min_classifications, (int, np.integer)) and min_classifications >= 1):
        problems.append(f"--min-classifications {min_classifications}: must be a whole number >= 1 "
                        f"(default {DEFAULT_MIN_CLASSIFICATIONS})")
    if not (isinstance(retirement_limit, (int, np.integer)) and retirement_limit >= 1):
        problems.append(f"--retirement-limit {retirement_limit}: must be a whole number >= 1, the most "
                        f"classifications a galaxy gets (default {DEFAULT_RETIREMENT_LIMIT})")
    return problems


@dataclass(frozen=True)
class LabelModel:
    """The label vote of :func:`label_probabilities`: per clump the humans' log odds of "odd" (prior included;
    each mark weighted by its volunteer's label skill, aggregation/labels.py) and their k odd marks of n, the
    crowd's agreement rate q (for marks still to come) and the detector's vote as a log-odds offset per clump."""

    k: np.ndarray
    n: np.ndarray
    q: float
    human_log_odds: np.ndarray
    machine_log_odds: np.ndarray

    def p_odd(self, more_odd: np.ndarray | float = 0.0, more: np.ndarray | float = 0.0,
              offset: np.ndarray | float = 0.0) -> np.ndarray:
        """P(odd) after ``more`` further marks of which ``more_odd`` are odd, each at the crowd's agreement."""
        lo = self.human_odds_after(more_odd, more) + offset
        return 1.0 / (1.0 + np.exp(-np.clip(lo, -700, 700)))

    def human_odds_after(self, more_odd: np.ndarray | float = 0.0, more: np.ndarray | float = 0.0) -> np.ndarray:
        """The humans' log odds of "odd" after ``more`` further marks, ``more_odd`` of them odd."""
        h = self.human_log_odds if np.ndim(more_odd) == 0 and np.ndim(more) == 0 else self.human_log_odds[:, None]
        return h + (2 * np.asarray(more_odd) - np.asarray(more)) * logit(self.q)


def label_model(clumps: pd.DataFrame, detector_labels: bool = True) -> LabelModel:
    """The humans' evidence is the clumps table's ``odd_log_odds`` (aggregation/labels.py). A table without it
    (a reducer's, a hand-made one) gets the one-coin vote of its ``odd_vote``: each mark names the true label with
    probability ``q`` (the share of marks on accepted clumps that agree with their clump's majority, clipped to
    [0.6, 0.99]); the prior share of odd clumps is that among the accepted clumps (clipped to [0.02, 0.98]).
    With k odd marks of n: P(odd) ∝ π q^k (1-q)^(n-k).

    With a detector (``n_machine_marks``, ``machine_odd_vote``) and ``detector_labels``, its marks vote too,
    with their own agreement rate ``q_m``: the share of its marks on accepted clumps that agree with the crowd's
    label, clipped to [0.5, 0.99] (0.5: no say)."""
    n = clumps["n_marks"].to_numpy(float)
    k = np.round(clumps["odd_vote"].to_numpy(float) * n)
    acc = clumps["accepted"].to_numpy(bool)
    agree = np.where(k > n / 2, k, n - k)
    q = float(np.clip(agree[acc].sum() / max(n[acc].sum(), 1.0), 0.6, 0.99)) if acc.any() else 0.8
    if "odd_log_odds" in clumps:
        human = clumps["odd_log_odds"].to_numpy(float)
    else:
        pi = float(np.clip((clumps["label"].to_numpy()[acc] == 2).mean(), 0.02, 0.98)) if acc.any() else 0.1
        human = logit(pi) + (2 * k - n) * logit(q)
    machine = np.zeros(len(clumps))
    if detector_labels and "machine_odd_vote" in clumps and "n_machine_marks" in clumps:
        nm = clumps["n_machine_marks"].to_numpy(float)
        km = np.round(clumps["machine_odd_vote"].to_numpy(float) * nm)
        agree_m = np.where(clumps["label"].to_numpy() == 2, km, nm - km)
        judged = acc & (nm > 0)
        qm = float(np.clip(agree_m[judged].sum() / nm[judged].sum(), 0.5, 0.99)) if judged.any() else 0.5
        machine = (2 * km - nm) * logit(qm)
    return LabelModel(k=k, n=n, q=q, human_log_odds=np.asarray(human, float), machine_log_odds=machine)


def label_probabilities(clumps: pd.DataFrame, detector_labels: bool = True) -> np.ndarray:
    """P(the clump's label is right), per row of the clumps table, from its marks' tool votes (:func:`label_model`).

    The label itself stays the humans' (their skill-weighted vote); a detector that disagrees can only keep the galaxy open for
    more eyes, one that agrees can settle a split crowd sooner.
    """
    if len(clumps) == 0:
        return np.zeros(0)
    lm = label_model(clumps, detector_labels)
    p_odd = lm.p_odd(offset=lm.machine_log_odds)
    return np.where(clumps["label"].to_numpy() == 2, p_odd, 1.0 - p_odd)


# the most the detector's silence may lower the odds that a single human click is a real clump: the faint clumps
# one volunteer of a few marks are the ones the detector misses too. bench/lean.py (trained detector, seed 1, four
# crowds): of the single clicks it did not mark at 3-5 viewers, 1.4-6.5% were real where the vote share alone said
# 1.6-12%, i.e. its silence was worth x0.2-0.9 on their odds, not the x0.12 it is worth on clumps the crowd agrees on
SILENCE_ON_A_SINGLE_CLICK = math.log(0.5)
# a stray click: one volunteer's, which nobody else would mark. Without this point the lowest share was 0.0125,
# where a stray takes a second mark in 2% of spots at 4 viewers, and a prior learned from galaxies that had
# their full crowd still called an accepted clump that 2 of 4 volunteers marked 24% likely to be reversed,
# where the full crowd reversed none of 92 (bench/vote_shares.py, default crowd; 5% with it)
STRAY_SHARE = 1e-4
THETA_GRID = np.r_[STRAY_SHARE, np.linspace(0.0125, 0.9875, 40)]  # vote shares the prior puts weight on
PRIOR_PSEUDO_CANDIDATES = 20.0  # the learned prior is shrunk towards uniform by this many pseudo-candidates


def _seen_at_all(m: np.ndarray, n: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """P(at least one of n viewers marks a spot | θ) where the spot was marked (m >= 1), else 1.

    A candidate exists only because someone marked it, so its count m is a zero-truncated binomial: dividing by
    this keeps a stray click (θ ~ 0.05, one mark of three) from looking like a spot a third of the crowd would
    mark. Untruncated, the learned prior put its mass at θ ~ 0.4 when every galaxy had 3 viewers (bench/lean.py),
    and a lone click looked real with P ~ 0.98 where 5-30% were."""
    return np.where(m >= 1, -np.expm1(n * np.log1p(-theta)), 1.0)


def _binomial_table(m: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The likelihoods of each distinct (m, n) count pair, the pairs' multiplicities, and each row's pair.

    ``table[u, j] = P(m of n viewers mark a spot | each marks it with probability THETA_GRID[j], someone did)``
    (the zero-truncated binomial, :func:`_seen_at_all`) in closed form through log-gamma (a few hundred distinct
    pairs, however many candidates: counts repeat)."""
    pairs, inverse, counts = np.unique(m + 1j * n, return_inverse=True, return_counts=True)  # sorts by (m, n)
    table = _marked_likelihood(pairs.real[:, None], pairs.imag[:, None], THETA_GRID[None, :])
    return table, counts.astype(float), inverse.reshape(-1)


def candidate_vote_counts(subjects: pd.DataFrame, clumps: pd.DataFrame,
                          marks: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate's markers and viewers, as the vote-share prior learns from them: the clumps table's
    (:func:`clump_vote_counts`), then one mark of its galaxy's viewers for each lone mark."""
    m_c, n_c = clump_vote_counts(clumps, marks)
    lone = _lone_marks(marks)
    n_lone = _lone_viewers(lone, subjects)
    return np.concatenate([m_c, np.ones(len(n_lone))]), np.concatenate([n_c, n_lone])


def _lone_marks(marks: pd.DataFrame | None) -> pd.DataFrame | None:
    if marks is not None and len(marks) and "real_if_unlinked_prob" in marks and "clump_id" in marks:
        return marks[marks["clump_id"].to_numpy() < 0]
    return None


def _lone_viewers(lone: pd.DataFrame | None, subjects: pd.DataFrame) -> np.ndarray:
    if lone is None:
        return np.zeros(0)
    return lone["subject_id"].map(subjects.set_index("subject_id")["n_viewers"]).fillna(1).to_numpy(float)


def vote_share_prior(n_markers: np.ndarray, n_viewers: np.ndarray, iterations: int = 100) -> np.ndarray:
    """The distribution of spots' vote shares over THETA_GRID, learned from every candidate of the export.

    Empirical Bayes: most spots are one volunteer's stray click (share near 0) or a clear clump (share near
    the crowd's detection rate); a lone click among 8 viewers is then almost surely a stray, while 2 of 4 stays
    contested. Shrunk towards uniform by PRIOR_PSEUDO_CANDIDATES, so a handful of galaxies cannot make it
    confident. Candidates with equal counts share one posterior: EM runs over the distinct (m, n) pairs."""
    m, n = _counts(n_markers, n_viewers)
    uniform = np.full(len(THETA_GRID), 1.0 / len(THETA_GRID))
    if len(m) == 0:
        return uniform
    lik, counts, _ = _binomial_table(m, n)
    w = uniform.copy()
    for _ in range(iterations):
        post = lik * w
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
        w = counts @ post / len(m)
    eps = PRIOR_PSEUDO_CANDIDATES / (PRIOR_PSEUDO_CANDIDATES + len(m))
    return (1 - eps) * w + eps * uniform


def _counts(n_markers: np.ndarray, n_viewers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(n_markers, float)
    n = np.maximum(np.asarray(n_viewers, float), m)
    return np.minimum(m, n), n


def flip_probabilities(n_markers: np.ndarray, n_viewers: np.ndarray, accepted: np.ndarray,
                       prior: np.ndarray | None = None, split: float = DEFAULT_VOTE_SPLIT) -> np.ndarray:
    """P(a larger crowd would reverse this candidate's verdict), from its vote share.

    The share θ of all volunteers who would mark the spot has the posterior prior(θ) x Binomial(m | n, θ) after
    m of n viewers marked it (prior: :func:`vote_share_prior`, default uniform); an accepted clump is reversed
    if θ < ``split``, a rejected one (or a lone mark) if θ > ``split``. The consensus model's probabilities
    assume volunteers' false marks are independent, so two of four volunteers marking one star look like a
    faint clump with certainty; the vote share says the crowd is split, and the galaxy needs more eyes."""
    m, n = _counts(n_markers, n_viewers)
    if len(m) == 0:
        return np.zeros(0)
    w = np.full(len(THETA_GRID), 1.0 / len(THETA_GRID)) if prior is None else prior
    table, _, row_pair = _binomial_table(m, n)
    post = table * w
    below = (post[:, THETA_GRID < split].sum(axis=1) / np.maximum(post.sum(axis=1), 1e-300))[row_pair]
    return np.where(np.asarray(accepted, bool), below, 1.0 - below)


def unseen_by_everyone(prior: np.ndarray, n_viewers: np.ndarray, rate: float,
                       split: float = DEFAULT_VOTE_SPLIT) -> np.ndarray:
    """Expected real clumps that none of n viewers marked, per galaxy with ``rate`` clumps found on average.

    The prior is over the spots someone marked; a clump of vote share θ is marked by at least one of n viewers
    with s = 1 - (1 - θ)^n, so for every clump found at θ, (1 - θ)^n / s more went unseen: rate x
    Σ prior(θ) (1 - θ)^n / s over the real θ >= split (the unseen-species correction of the truncated counts).
    The model's own estimate multiplies the viewers' miss rates as if misses were independent; faint clumps are
    missed by everyone together, which the spread of real clumps' vote shares (the learned prior) captures."""
    real = THETA_GRID >= split
    w = prior[real] / max(prior[real].sum(), 1e-300)
    n = np.maximum(np.asarray(n_viewers, float), 1.0)[:, None]
    missed_by_all = (1.0 - THETA_GRID[real][None, :]) ** n
    return rate * ((missed_by_all / (1.0 - missed_by_all)) @ w)


def _binomial(j: np.ndarray, n: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """P(j of n | theta), broadcasting; 0 where j > n."""
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    ok = j <= n
    jj, nn = np.where(ok, j, 0), np.where(ok, n, 0)
    log_choose = lgamma(nn + 1) - lgamma(jj + 1) - lgamma(nn - jj + 1)
    with np.errstate(divide="ignore"):
        p = np.exp(log_choose + jj * np.log(theta) + (nn - jj) * np.log1p(-theta))
    return np.where(ok, p, 0.0)


def _marked_likelihood(m: np.ndarray, n: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """P(m of n viewers mark a spot | θ, someone marked it): the zero-truncated binomial (:func:`_seen_at_all`)."""
    return _binomial(m, n, theta) / _seen_at_all(m, n, theta)


def settled_error_after(n_markers: np.ndarray, n_viewers: np.ndarray, more: np.ndarray, prior: np.ndarray,
                        log_odds_real: np.ndarray | float = 0.0, split: float = DEFAULT_VOTE_SPLIT) -> np.ndarray:
    """P(the crowd's verdict on a spot is wrong) expected after ``more`` further viewers, per row.

    A preposterior: the next viewers mark the spot j times, j drawn from the posterior predictive of its vote
    share θ (prior x Binomial(m | n, θ), :func:`vote_share_prior`); the verdict then goes to the likelier side of
    ``split`` and is wrong with min(P(θ < split), P(θ >= split)), both updated by the detector's evidence
    ``log_odds_real`` (its say does not change with more viewers). A spot at θ ~ ``split`` (a faint clump one
    volunteer in three marks) stays near 0.5 however many more look: more classifications cannot settle it."""
    m, n = _counts(n_markers, n_viewers)
    more = np.maximum(np.asarray(more, float), 0.0)
    if len(m) == 0:
        return np.zeros(0)
    evidence = np.broadcast_to(np.asarray(log_odds_real, float), m.shape)
    triples, row = np.unique(np.stack([m, n, more], axis=1), axis=0, return_inverse=True)
    row = row.reshape(-1)
    j = np.arange(int(more.max()) + 1, dtype=float)
    low = THETA_GRID < split
    post = _marked_likelihood(triples[:, :1], triples[:, 1:2], THETA_GRID[None, :]) * prior[None, :]  # (u, theta)
    post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    lik = _binomial(j[None, :, None], triples[:, 2, None, None], THETA_GRID[None, None, :])  # (u, j, theta)
    joint = lik * post[:, None, :]
    pred = joint.sum(axis=2)  # (u, j): P(j of the next `more` mark it)
    below = joint[:, :, low].sum(axis=2) / np.maximum(pred, 1e-300)
    below = with_evidence(below[row], -evidence[:, None])  # P(not real) per row and j, with the detector's say
    return (pred[row] * np.minimum(below, 1.0 - below)).sum(axis=1)


def label_error_after(lm: LabelModel, label: np.ndarray, share: np.ndarray, more: np.ndarray) -> np.ndarray:
    """P(the clump's label is wrong) expected after ``more`` further viewers, of whom about ``share`` mark it.

    Each new mark says "odd" with q when the clump is odd, 1 - q when it is not (:func:`label_model`), the odd
    marks k' are drawn from that mixture at the clump's current P(odd), and the label is again the humans'
    vote. Contested labels whose next marks keep splitting stay uncertain."""
    r = np.round(np.clip(share, 0.0, 1.0) * np.maximum(np.asarray(more, float), 0.0))
    if len(r) == 0:
        return np.zeros(0)
    kk = np.arange(int(r.max()) + 1, dtype=float)[None, :]
    p_now = lm.p_odd(offset=lm.machine_log_odds)[:, None]
    p_k = p_now * _binomial(kk, r[:, None], lm.q) + (1 - p_now) * _binomial(kk, r[:, None], 1 - lm.q)
    p_odd = lm.p_odd(kk, r[:, None], lm.machine_log_odds[:, None])
    human = lm.human_odds_after(kk, r[:, None])
    unchanged = (human == 0) | (r[:, None] == 0)  # no new marks (or a dead heat): the label stays
    odd_after = np.where(unchanged, (np.asarray(label) == 2)[:, None], human > 0)
    return (p_k * np.where(odd_after, 1.0 - p_odd, p_odd)).sum(axis=1)


def clump_vote_counts(clumps: pd.DataFrame, marks: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's markers and viewers as votes on "is there a clump here": for a candidate at the image
    centre (``central``), the marks its volunteers would have made on any centre (their ``centre_rate``) are no
    such votes and leave both counts. Four of six volunteers marking a bulge looked like a sure clump when all
    four were volunteers who mark every centre (bulge crowd, bench/lean.py; the next fourteen marked nothing)."""
    m = clumps["n_marks"].to_numpy(float)
    n = clumps["n_viewers"].to_numpy(float)
    if marks is None or "centre_rate" not in marks or "central" not in clumps or not clumps["central"].any():
        return m, n
    human = marks[(marks["clump_id"].to_numpy() >= 0) & ~(marks["machine"].to_numpy(bool) if "machine" in marks
                                                            else np.zeros(len(marks), bool))]
    by_clump = human.groupby(["subject_id", "clump_id"])["centre_rate"].sum()
    keys = pd.MultiIndex.from_arrays([clumps["subject_id"].to_numpy(), clumps["clump_id"].to_numpy()])
    centre_votes = np.where(clumps["central"].to_numpy(bool), by_clump.reindex(keys).fillna(0.0).to_numpy(), 0.0)
    return np.maximum(m - centre_votes, 0.0), np.maximum(n - centre_votes, 1.0)


def _single_click_rate(rates: np.ndarray | None, n_viewers: np.ndarray) -> np.ndarray:
    """The measured P(real) of a spot one of ``n_viewers`` marked (the last row beyond the table; NaN unmeasured)."""
    n = np.asarray(n_viewers, float)
    if rates is None or len(rates) < 2:
        return np.full(len(n), np.nan)
    return np.asarray(rates, float)[np.clip(np.rint(n).astype(int), 1, len(rates) - 1)]


def with_evidence(p: np.ndarray, log_odds: np.ndarray) -> np.ndarray:
    """Probabilities ``p`` with their odds multiplied by ``exp(log_odds)`` (independent evidence, e.g. a detector's)."""
    lo = np.log(np.clip(p, 1e-12, 1.0)) - np.log(np.clip(1.0 - p, 1e-12, 1.0)) + log_odds
    return 1.0 / (1.0 + np.exp(-np.clip(lo, -700, 700)))


def galaxy_limits(subjects: pd.DataFrame, retirement_limit: int) -> np.ndarray:
    """Per subject row, the classifications its galaxy can have before the workflow retires it: the limit, plus
    those under the galaxy's earlier subjects (:data:`EARLIER_VIEWERS_COLUMN`) when it was sent back to
    Zooniverse as a new subject, which gets the limit afresh."""
    earlier = (pd.to_numeric(subjects[EARLIER_VIEWERS_COLUMN], errors="coerce").fillna(0).to_numpy(float)
               if EARLIER_VIEWERS_COLUMN in subjects else np.zeros(len(subjects)))
    return float(retirement_limit) + earlier


def retired_by_workflow(subjects: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per subject row: (known, retired): whether a Zooniverse subjects export said (:data:`RETIRED_COLUMN`; blank
    for a subject it does not list in the aggregated workflow) and whether the workflow has retired it, so that
    volunteers no longer see it."""
    if RETIRED_COLUMN not in subjects:
        return np.zeros(len(subjects), bool), np.zeros(len(subjects), bool)
    col = subjects[RETIRED_COLUMN]
    known = col.notna().to_numpy()
    return known, known & col.fillna(False).to_numpy(bool)


def sid_limit(subject_ids: pd.Series, limit: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The :func:`galaxy_limits` of the subjects ``keys`` (per clump or mark) name."""
    return pd.Series(limit, index=subject_ids.to_numpy()).reindex(keys).to_numpy(float)


def expected_errors(subjects: pd.DataFrame, clumps: pd.DataFrame, marks: pd.DataFrame | None = None,
                    split: float = DEFAULT_VOTE_SPLIT, single_clicks_by_vote_share: bool = True,
                    detector_labels: bool = True, retirement_limit: int | None = None,
                    vote_shares: np.ndarray | None = None,
                    reference_vote_shares: np.ndarray | None = None,
                    single_click_real: np.ndarray | None = None) -> pd.DataFrame:
    """Per subject: expected missed, false and wrongly labelled clumps, and their sum (``expected_errors``).

    Each candidate's error probability is the larger of the model's (``false_pos_prob``; for lone marks
    ``real_if_unlinked_prob`` is replaced) and the vote-share reversal probability
    (:func:`flip_probabilities`); the clumps that every viewer missed are the model's share of
    ``expected_num_false_neg``. With a detector (the clumps table's ``machine_evidence``), a candidate of one
    human click that the detector did not mark is judged like a lone mark, by its vote share and the detector's
    silence, where ``single_click_real`` measured such clicks at its number of viewers (else, and with
    ``single_clicks_by_vote_share=False``, by the larger of that and the model's, as without a detector), and
    its labels vote in :func:`label_probabilities` (``detector_labels``).

    With ``retirement_limit``, also ``expected_gain``: the errors the classifications left before that limit are
    expected to remove (:func:`settled_error_after`, :func:`label_error_after` and the clumps every viewer
    missed so far, which more viewers would find).

    ``vote_shares``: these tables' own prior of spots' vote shares over THETA_GRID (default: learned here by
    :func:`vote_share_prior`; pass it when it is already known). With a few viewers per galaxy the counts cannot
    tell a stray click from a faint spot, and that prior made accepted clumps of 2 of 4 marks look 31-80% likely
    to be reversed, where the full crowd reversed 0-13% (bench/vote_shares.py); ``reference_vote_shares``, one
    learned from galaxies that had their full crowd (``aggregate --reference``), does not have that blind spot
    and is used instead. It reads a single click as a stray more surely than the full crowd bears out (1-2%
    against 8-14% reversed), so a rejected single click keeps the larger of the two priors' P(real): with the
    reference alone the detector-assisted saving on one seed rose from 3.5x to 3.9x on that optimism only
    (bench/lean.py, stop 19).

    ``single_click_real``: per number of viewers k (index k), the measured share of spots one of k volunteers
    marked that the whole crowd accepted (aggregation/reference.py); a rejected spot of one click (or a lone mark)
    is real with at least that probability before the detector's evidence. The vote share alone put one click of
    three at 0.05 where 29% were real, so a detector that said next to nothing retired galaxies with clumps missing."""
    sid = subjects["subject_id"]
    out = pd.DataFrame(index=subjects.index)
    needed = {"accepted", "false_pos_prob", "n_marks", "n_viewers", "odd_vote", "label"}
    if "expected_num_false_neg" not in subjects or not needed <= set(clumps.columns):
        for c in ("expected_missed", "expected_false", "expected_wrong_labels", "expected_errors", "expected_gain"):
            out[c] = np.nan  # a reducer: no posterior to read
        return out
    fnr = pd.to_numeric(subjects["expected_num_false_neg"], errors="coerce").to_numpy(float)
    acc_mask = clumps["accepted"].to_numpy(bool)
    fpp = clumps["false_pos_prob"].to_numpy(float)
    lone = _lone_marks(marks)
    n_lone_view = _lone_viewers(lone, subjects)
    m_c, n_c = clump_vote_counts(clumps, marks)
    own = (vote_share_prior(*candidate_vote_counts(subjects, clumps, marks)) if vote_shares is None
           else np.asarray(vote_shares, float))
    prior = own if reference_vote_shares is None else np.asarray(reference_vote_shares, float)
    flip = flip_probabilities(m_c, n_c, acc_mask, prior, split)
    once = ~acc_mask & (m_c <= 1)
    if reference_vote_shares is not None:  # single clicks keep the export's own, larger, P(real) (above)
        flip = np.where(once, np.maximum(flip, flip_probabilities(m_c, n_c, acc_mask, own, split)), flip)
    rate_c = _single_click_rate(single_click_real, n_c)
    flip = np.where(once, np.maximum(flip, np.nan_to_num(rate_c, nan=0.0)), flip)
    machine_c = clumps["machine_evidence"].to_numpy(float) if "machine_evidence" in clumps else np.zeros(len(clumps))
    single = np.zeros(len(clumps), bool)
    if "n_machine_marks" in clumps:  # one human click, no detection: the detector's silence says little (below)
        single = ~acc_mask & (clumps["n_marks"].to_numpy() <= 1) & (clumps["n_machine_marks"].to_numpy() == 0)
        if "detector_looked" in clumps:  # where it never looked, a single click is judged as without a detector
            single &= clumps["detector_looked"].to_numpy(bool)
        machine_c = np.where(single, np.maximum(machine_c, SILENCE_ON_A_SINGLE_CLICK), machine_c)
    if "machine_evidence" in clumps:  # a detector annotator (aggregation/machine.py): its evidence updates them
        flip = with_evidence(flip, np.where(acc_mask, -1.0, 1.0) * machine_c)
    wrong_label = np.where(acc_mask, 1.0 - label_probabilities(clumps, detector_labels), 0.0)
    false_c = np.where(acc_mask, np.maximum(fpp, flip), 0.0)
    model_miss_c = np.where(acc_mask, 0.0, 1.0 - fpp)
    miss_c = np.where(acc_mask, 0.0, np.maximum(1.0 - fpp, flip))
    if single_clicks_by_vote_share and "machine_evidence" in clumps and "n_machine_marks" in clumps:
        # with a detector, a candidate made of ONE human click that the detector did not mark is judged as a lone
        # mark is (below): by its vote share, updated by the detector's silence. The model's own P(real) for it
        # comes from the visibility mixture (a faint clump seen by one of n) and runs far above the truth
        # (bench/lean.py: 0.81 for one click of 5 viewers, 8% real), so under max() the detector's silence,
        # however reliable, could never close the galaxy
        # -- but only where a single click's P(real) was measured (``single_click_real``): the vote share alone put
        # one click of three at 0.05 where 29% were real (the loop's 200 px project), and nothing in an export
        # without full-crowd galaxies says which project it is. Unmeasured, the model's larger P(real) stands.
        miss_c = np.where(single & np.isfinite(rate_c), flip, miss_c)
    by = clumps["subject_id"].to_numpy()

    def per_subject(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return sid.map(pd.Series(values).groupby(keys).sum()).fillna(0.0).to_numpy(float, copy=True)

    unseen = fnr - per_subject(model_miss_c, by)
    miss = per_subject(miss_c, by)
    gain = np.zeros(len(subjects))
    if retirement_limit is not None:
        limit = galaxy_limits(subjects, retirement_limit)  # a galaxy sent back: its newest subject's limit
        limit_c = sid_limit(sid, limit, by)
        left_c = np.maximum(limit_c - clumps["n_viewers"].to_numpy(float), 0.0)  # none past the limit
        after = settled_error_after(m_c, n_c, left_c, prior, machine_c, split)
        gain += per_subject(np.maximum(np.where(acc_mask, false_c, miss_c) - after, 0.0), by)
        if acc_mask.any():
            lm = label_model(clumps[acc_mask], detector_labels)
            label_after = label_error_after(lm, clumps["label"].to_numpy()[acc_mask],
                                            (clumps["n_marks"] / clumps["n_viewers"].clip(lower=1)).to_numpy()[acc_mask],
                                            left_c[acc_mask])
            gain += per_subject(np.maximum(wrong_label[acc_mask] - label_after, 0.0), by[acc_mask])
    if lone is not None:
        unseen -= per_subject(lone["real_if_unlinked_prob"].to_numpy(float), lone["subject_id"].to_numpy())
        lone_flip = flip_probabilities(np.ones(len(lone)), n_lone_view, np.zeros(len(lone), bool), prior, split)
        if reference_vote_shares is not None:
            lone_flip = np.maximum(lone_flip, flip_probabilities(np.ones(len(lone)), n_lone_view,
                                                                 np.zeros(len(lone), bool), own, split))
        rate_lone = _single_click_rate(single_click_real, n_lone_view)
        lone_flip = np.maximum(lone_flip, np.nan_to_num(rate_lone, nan=0.0))
        is_machine = lone["machine"].to_numpy(bool) if "machine" in lone else np.zeros(len(lone), bool)
        lone_ev = (np.maximum(lone["machine_evidence"].to_numpy(float), SILENCE_ON_A_SINGLE_CLICK) if "machine" in lone
                   else np.zeros(len(lone)))
        # a lone click is a single click too: unmeasured, the detector's silence on it counts for nothing (above);
        # a detection there still keeps it open
        lone_ev = np.where(np.isfinite(rate_lone), lone_ev, np.maximum(lone_ev, 0.0))
        if "machine" in lone:  # a detector's own lone mark is no crowd vote; the detector's evidence updates the rest
            lone_flip = np.where(is_machine, 0.0, with_evidence(lone_flip, lone_ev))
        miss += per_subject(lone_flip, lone["subject_id"].to_numpy())
        if retirement_limit is not None:
            limit_lone = sid_limit(sid, limit, lone["subject_id"].to_numpy())
            after = settled_error_after(np.ones(len(lone)), n_lone_view, np.maximum(limit_lone - n_lone_view, 0.0),
                                        prior, lone_ev, split)
            gain += per_subject(np.where(is_machine, 0.0, np.maximum(lone_flip - after, 0.0)),
                                lone["subject_id"].to_numpy())
    n_view = pd.to_numeric(subjects["n_viewers"], errors="coerce").fillna(0).to_numpy(float)
    rate = acc_mask.sum() / max(int((n_view > 0).sum()), 1)
    unseen_crowd = unseen_by_everyone(prior, n_view, rate, split)
    if "machine_miss_prob" in subjects:  # ... and the detector missed it too
        unseen_crowd = unseen_crowd * pd.to_numeric(subjects["machine_miss_prob"], errors="coerce").fillna(1.0).to_numpy()
    unseen = np.maximum(unseen, unseen_crowd)
    if retirement_limit is not None:  # of those every viewer missed so far, the share a full crowd would find
        still_unseen = (unseen_by_everyone(prior, np.maximum(limit, n_view), 1.0, split)
                        / np.maximum(unseen_by_everyone(prior, n_view, 1.0, split), 1e-12))
        gain += unseen * (1.0 - still_unseen)
    out["expected_missed"] = miss + np.maximum(unseen, 0.0)
    out["expected_false"] = per_subject(false_c, by)
    out["expected_wrong_labels"] = per_subject(wrong_label, by)
    out["expected_errors"] = out["expected_missed"] + out["expected_false"] + out["expected_wrong_labels"]
    out["expected_gain"] = gain if retirement_limit is not None else np.nan
    return out


def apply_stopping_rule(subjects: pd.DataFrame, clumps: pd.DataFrame, marks: pd.DataFrame | None = None,
                        retire_below: float = DEFAULT_RETIRE_BELOW,
                        min_classifications: int = DEFAULT_MIN_CLASSIFICATIONS,
                        single_clicks_by_vote_share: bool = True, detector_labels: bool = True,
                        retirement_limit: int = DEFAULT_RETIREMENT_LIMIT,
                        vote_shares: np.ndarray | None = None,
                        reference_vote_shares: np.ndarray | None = None,
                        single_click_real: np.ndarray | None = None) -> pd.DataFrame:
    """The subjects table with the stopping rule's columns (replacing any earlier ``is_finished``).

    ``subjects`` needs ``subject_id``, ``n_viewers`` (human classifications) and ``expected_num_false_neg``;
    ``clumps`` is the consensus clumps table (accepted and rejected), ``marks`` its marks table (lone marks). A
    subject with no expected-miss estimate (no consensus model, e.g. a reducer, or no classifications) is never
    finished. A galaxy that is not finished is *stalled* (``is_stalled``) when the classifications left before
    ``retirement_limit`` are expected neither to finish it (its expected errors minus ``expected_gain`` stay at
    or above ``retire_below``) nor to remove as many as ``retire_below`` of its errors: its clumps or labels sit
    where the crowd splits, and more volunteers would not settle them (an expert should look;
    it is not finished and never retired as such). A galaxy neither finished nor yet at half its ``retirement_limit``
    is ``in_progress``: its consensus is no training label yet (``train`` leaves it out); one neither finished nor
    stalled with fewer than ``retirement_limit`` classifications is ``awaiting_volunteers``: the workflow still
    shows it, so ``select-next-batch --include-unfinished`` does not upload it again. A galaxy sent back to
    Zooniverse (:data:`EARLIER_VIEWERS_COLUMN` > 0) has the limit afresh under its new subject: its limit is
    ``retirement_limit`` plus its earlier subjects' classifications (:func:`galaxy_limits`); one the workflow has
    retired (:data:`RETIRED_COLUMN`, from ``--subjects``) gets no more, so it is neither in progress nor awaiting
    volunteers, and one it has not retired is still shown, whatever the workflow's limit (``is_stalled`` and
    ``expected_gain`` still say what the classifications left before ``retirement_limit`` would do, so a stalled
    galaxy ``retire --stalled`` retired stays stalled, and is not sent back). Only a galaxy that has had at least
    half its ``retirement_limit`` can stall: with fewer, the preposterior extrapolates the vote shares learned from a few
    viewers each to several times as many (bulge crowd with the detector, bench/lean.py: at 3 viewers the learned
    prior sits on the split between strays and faint clumps, and 71 of 300 galaxies stalled after 3
    classifications, losing their faint clumps). ``single_clicks_by_vote_share``, ``detector_labels``: see
    :func:`expected_errors` (False: the rule before them, for comparison), as are ``vote_shares``,
    ``reference_vote_shares`` and ``single_click_real``."""
    problems = check_stopping_options(retire_below, min_classifications, retirement_limit)
    if problems:
        raise ClumptoolError("; ".join(problems))
    subj = subjects.drop(columns=[c for c in STOPPING_COLUMNS if c in subjects.columns])
    err = expected_errors(subj, clumps, marks, single_clicks_by_vote_share=single_clicks_by_vote_share,
                          detector_labels=detector_labels, retirement_limit=retirement_limit,
                          vote_shares=vote_shares, reference_vote_shares=reference_vote_shares,
                          single_click_real=single_click_real)
    n = pd.to_numeric(subj["n_viewers"], errors="coerce").fillna(0).astype("int64").to_numpy()
    e = err["expected_errors"].to_numpy(float)
    gain = err["expected_gain"].to_numpy(float)
    known = np.isfinite(e)
    enough = n >= min_classifications
    finished = known & enough & (e < retire_below)
    seen_enough = 2 * n >= retirement_limit  # half the limit (above)
    limit = galaxy_limits(subj, retirement_limit).astype("int64")  # a galaxy sent back: its newest subject's
    stalled = (known & enough & seen_enough & ~finished & (n < limit) & (gain < retire_below)
               & (e - gain >= retire_below))
    missed, false, labels = (err[c].to_numpy(float) for c in ("expected_missed", "expected_false",
                                                              "expected_wrong_labels"))
    reasons = []
    for i in range(len(subj)):
        if not enough[i]:
            reasons.append(f"not finished: {n[i]} classifications < {min_classifications}")
        elif not known[i]:
            reasons.append("not finished: no expected-error estimate (the clumpscout consensus gives one)")
        elif finished[i]:
            reasons.append(f"finished: expected errors {e[i]:.2f} < {retire_below:g} with {n[i]} classifications")
        else:
            why = (f"expected errors {e[i]:.2f} >= {retire_below:g} (missed {missed[i]:.2f}, false {false[i]:.2f}, "
                   f"labels {labels[i]:.2f})")
            if stalled[i]:
                reasons.append(f"stalled: {why}, and the {limit[i] - n[i]} classifications left before "
                               f"{limit[i]} are expected to remove only {gain[i]:.2f} of them (not "
                               "finished; more volunteers would not settle it)")
            else:
                reasons.append(f"not finished: {why}")
    for c in err.columns:
        subj[c] = err[c].to_numpy(float)
    subj["is_finished"] = finished
    subj["is_stalled"] = stalled
    # not finished and not yet half the limit: volunteers are still at it (in a lean project, or a live export), and
    # its consensus is no label yet: a galaxy one volunteer saw without marking would train as "no clumps here"
    said, retired = retired_by_workflow(subj)  # Zooniverse's word, where a subjects export gave it
    subj[IN_PROGRESS_COLUMN] = ~finished & (2 * n < retirement_limit) & ~retired
    # ... and until the limit the workflow keeps showing it (unless retired by hand): select-next-batch must not
    # upload it again as a new subject
    subj[AWAITING_COLUMN] = ~finished & ~stalled & np.where(said, ~retired, n < limit)
    subj["finished_reason"] = pd.Series(reasons, index=subj.index, dtype=object)
    return subj
