"""Simulated volunteers: who sees which galaxy, and where they click.

A population of volunteers with heterogeneous skill (volunteers_truth.csv):

* ``normal``: detection rate ~ Beta(mean 0.78), spurious clicks ~ Poisson(rate ~ Exp(mean 0.3)) per
  classification, click scatter 1.2-3.5 px, tool confusion ~ Beta(mean 0.2);
* ``careless``: detect 20-50% of clumps, scatter up to 1.5x larger;
* ``expert``: detect ~95%, few spurious clicks, tight clicks, little tool confusion;
* ``random_clicker``: ignore the image, click 1-5 points anywhere.

A volunteer clicks a clump with probability ``detection_rate x s(peak S/N)``, where ``s`` is a logistic in the
clump's peak signal-to-noise (half at S/N 4): faint clumps are missed more. Spurious clicks fall on the galaxy
(60%), on foreground stars when there are any (20%), or anywhere (20%). Activity is heavy-tailed (Zipf-like): a
few volunteers see hundreds of subjects, most see a handful. Each subject gets ``volunteers_per_subject`` distinct
volunteers, and a few classifications are repeated by the same volunteer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from clumptool.simulation.config import SimulationConfig, VolunteerModelConfig

KINDS = ("normal", "careless", "expert", "random_clicker")


@dataclass
class Population:
    table: pd.DataFrame  # volunteers_truth.csv

    @property
    def n(self) -> int:
        return len(self.table)


def make_population(rng: np.random.Generator, n: int, model: VolunteerModelConfig) -> Population:
    """Draw ``n`` volunteers with their kinds and skills."""
    fr = np.array([model.careless_fraction, model.expert_fraction, model.random_clicker_fraction])
    p = np.concatenate([[max(0.0, 1 - fr.sum())], fr])
    kind = rng.choice(np.array(KINDS), size=n, p=p / p.sum())
    m = model.detection_mean
    if m >= 1.0:
        det = np.ones(n)
    else:
        det = rng.beta(m * model.detection_spread, (1 - m) * model.detection_spread, n)
    lo, hi = model.scatter_px
    scatter = rng.uniform(lo, hi, n)
    fp = rng.exponential(model.false_clicks_mean, n) if model.false_clicks_mean > 0 else np.zeros(n)
    tc = model.tool_confusion_mean
    confusion = rng.beta(tc * 10, (1 - tc) * 10, n) if 0 < tc < 1 else np.full(n, tc)
    careless = kind == "careless"
    det[careless] = rng.uniform(0.2, 0.5, careless.sum())
    scatter[careless] *= 1.5
    expert = kind == "expert"
    det[expert] = rng.uniform(0.92, 0.99, expert.sum())
    fp[expert] *= 0.2
    scatter[expert] = rng.uniform(0.8, 1.5, expert.sum())
    confusion[expert] *= 0.25
    rand = kind == "random_clicker"
    det[rand] = 0.0
    fp[rand] = rng.uniform(1, 5, rand.sum())
    anonymous = rng.random(n) < model.anonymous_fraction
    ids = np.arange(n)
    names = np.where(anonymous, [f"not-logged-in-{h:012x}" for h in rng.integers(0, 2**48, n)],
                     [f"volunteer{i:06d}" for i in ids])
    user_ids = np.where(anonymous, "", (1_000_000 + ids).astype(str))
    ips = [f"{h:020x}"[:20] for h in rng.integers(0, 2**62, n)]
    # Zipf-like activity: weight of being picked for a subject
    activity = rng.pareto(1.1, n) + 0.05
    table = pd.DataFrame({
        "user_name": names, "user_id": user_ids, "user_ip": ips, "kind": kind, "detection_rate": det,
        "false_positive_rate": fp, "scatter_px": scatter, "tool_confusion": confusion, "activity": activity,
    })
    return Population(table)


def assign_viewers(rng: np.random.Generator, n_subjects: int, per_subject: int, activity: np.ndarray) -> np.ndarray:
    """(n_subjects, per_subject) distinct volunteer indices per subject, drawn by activity weight."""
    n = len(activity)
    if per_subject > n:
        raise ValueError("more volunteers per subject than volunteers")
    p = activity / activity.sum()
    out = np.empty((n_subjects, per_subject), dtype=np.int64)
    draw = rng.choice(n, size=(n_subjects, per_subject * 3), p=p)
    for i in range(n_subjects):
        _, first = np.unique(draw[i], return_index=True)
        picks = draw[i][np.sort(first)][:per_subject]
        while len(picks) < per_subject:  # very active volunteers took most draws: top up
            extra = rng.choice(n, size=per_subject, p=p)
            picks = np.concatenate([picks, extra[~np.isin(extra, picks)]])
            _, first = np.unique(picks, return_index=True)
            picks = picks[np.sort(first)][:per_subject]
        out[i] = picks
    return out


def detect_prob(peak_snr: np.ndarray, model: VolunteerModelConfig) -> np.ndarray:
    """How the chance of clicking a clump falls with its faintness (1 for bright clumps)."""
    return expit((np.asarray(peak_snr, dtype=float) - model.snr_half) / max(model.snr_width, 1e-6))


@dataclass
class ClickBatch:
    """The classifications of a set of subjects: one row per classification, one row per mark."""

    classifications: pd.DataFrame  # subject_id, volunteer, repeat
    marks: pd.DataFrame  # row (index into classifications), x, y, tool


def simulate_clicks(rng: np.random.Generator, subjects: pd.DataFrame, truth: pd.DataFrame, pop: Population,
                    config: SimulationConfig) -> ClickBatch:
    """Where every assigned volunteer clicks on every subject.

    ``subjects``: subject_id, image_width, fwhm_px, galaxy_scale; ``truth``: subject_id, x, y, label, peak_snr;
    optional ``stars`` column in subjects: list of (x, y) of distractor stars.
    """
    model = config.volunteer_model
    vt = pop.table
    viewers = assign_viewers(rng, len(subjects), config.volunteers_per_subject, vt["activity"].to_numpy())
    sid = np.repeat(subjects["subject_id"].to_numpy(), config.volunteers_per_subject)
    vol = viewers.ravel()
    # a few repeats: the same volunteer classifies the subject again
    n_rep = rng.binomial(len(vol), model.repeat_fraction) if model.repeat_fraction > 0 else 0
    rep_idx = rng.choice(len(vol), n_rep, replace=False) if n_rep else np.zeros(0, int)
    sid = np.concatenate([sid, sid[rep_idx]])
    vol = np.concatenate([vol, vol[rep_idx]])
    repeat = np.concatenate([np.zeros(len(viewers.ravel()), bool), np.ones(n_rep, bool)])
    cls = pd.DataFrame({"subject_id": sid, "volunteer": vol, "repeat": repeat})

    det = vt["detection_rate"].to_numpy()
    scat = vt["scatter_px"].to_numpy()
    conf = vt["tool_confusion"].to_numpy()
    fp_rate = vt["false_positive_rate"].to_numpy()
    is_random = (vt["kind"] == "random_clicker").to_numpy()
    size = config.image_size

    # true clicks: pair every classification with every clump of its subject
    tr = truth[["subject_id", "x", "y", "label", "peak_snr"]].reset_index(drop=True)
    pairs = cls.reset_index().rename(columns={"index": "row"}).merge(tr, on="subject_id", how="inner")
    v = pairs["volunteer"].to_numpy()
    p_click = det[v] * detect_prob(pairs["peak_snr"].to_numpy(), model)
    p_click[is_random[v]] = 0.0
    hit = rng.random(len(pairs)) < p_click
    pairs = pairs[hit]
    v = pairs["volunteer"].to_numpy()
    true_tool = pairs["label"].to_numpy() - 1
    flip = rng.random(len(pairs)) < conf[v]
    tool = np.where(flip, 1 - true_tool, true_tool)
    x = pairs["x"].to_numpy() + rng.normal(0, 1, len(pairs)) * scat[v]
    y = pairs["y"].to_numpy() + rng.normal(0, 1, len(pairs)) * scat[v]
    true_marks = pd.DataFrame({"row": pairs["row"].to_numpy(), "x": x, "y": y, "tool": tool})

    # spurious clicks
    n_fp = rng.poisson(fp_rate[cls["volunteer"].to_numpy()])
    rows = np.repeat(np.arange(len(cls)), n_fp)
    sub = subjects.set_index("subject_id")
    sid_fp = cls["subject_id"].to_numpy()[rows]
    vol_fp = cls["volunteer"].to_numpy()[rows]
    where = rng.random(len(rows))
    scale = sub["galaxy_scale"].reindex(sid_fp).to_numpy()
    ang = rng.uniform(0, 2 * np.pi, len(rows))
    rad = scale * np.sqrt(rng.uniform(0, 1, len(rows))) * 2.5
    fx = size / 2 + rad * np.cos(ang)
    fy = size / 2 + rad * np.sin(ang)
    anywhere = (where >= 0.8) | is_random[vol_fp]
    fx[anywhere] = rng.uniform(0, size, anywhere.sum())
    fy[anywhere] = rng.uniform(0, size, anywhere.sum())
    if "stars" in sub.columns:
        on_star = (where >= 0.6) & (where < 0.8) & ~is_random[vol_fp]
        for i in np.flatnonzero(on_star):
            stars = sub.at[sid_fp[i], "stars"]
            if len(stars):
                sx, sy = stars[rng.integers(len(stars))]
                fx[i], fy[i] = sx + rng.normal(0, scat[vol_fp[i]]), sy + rng.normal(0, scat[vol_fp[i]])
    fp_marks = pd.DataFrame({"row": rows, "x": fx, "y": fy, "tool": (rng.random(len(rows)) < 0.3).astype(int)})
    marks = pd.concat([true_marks, fp_marks], ignore_index=True)
    marks["x"] = marks["x"].clip(0, size)
    marks["y"] = marks["y"].clip(0, size)
    # volunteers click in no particular order
    marks = marks.iloc[rng.permutation(len(marks))].sort_values("row", kind="stable").reset_index(drop=True)
    return ClickBatch(classifications=cls, marks=marks)
