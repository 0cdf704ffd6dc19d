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

A crowd (:class:`~clumptool.simulation.config.CrowdConfig`) adds behaviours on top: bulge clickers, a careless
distractor minority clicking stars, companions and noise peaks, fewer volunteers per subject, heavy tool
confusion with a per-volunteer offset. Crowd draws use their own generator (``crowd_rng``), so with the same
seed every crowd sees the same galaxies and volunteers. Every mark carries its ``target`` (clump, spurious, bulge,
companion_centre, star, companion, noise_peak) and ``object_id`` for marks_truth.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from clumptool.simulation.config import CrowdConfig, SimulationConfig, VolunteerModelConfig

KINDS = ("normal", "careless", "expert", "random_clicker")
CROWD_KINDS = ("distractor",)  # a normal volunteer turned careless distractor clicker by the distractor crowd
OBJECT_KINDS = ("bulge", "star", "companion", "noise_peak")
TARGETS = ("clump", "spurious", "bulge", "companion_centre", "star", "companion", "noise_peak")


@dataclass
class Population:
    table: pd.DataFrame  # volunteers_truth.csv

    @property
    def n(self) -> int:
        return len(self.table)


def make_population(rng: np.random.Generator, n: int, model: VolunteerModelConfig,
                    crowd: CrowdConfig | None = None, crowd_rng: np.random.Generator | None = None,
                    scale: float = 1.0) -> Population:
    """Draw ``n`` volunteers with their kinds and skills (and the crowd's per-volunteer rates)."""
    crowd = crowd or CrowdConfig()
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
    tc = model.tool_confusion_mean if crowd.tool_confusion_mean is None else crowd.tool_confusion_mean
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
    return Population(_add_crowd_traits(table, crowd, crowd_rng or np.random.default_rng(0), scale))


def _beta(rng: np.random.Generator, mean: float, conc: float, n: int) -> np.ndarray:
    return rng.beta(mean * conc, (1 - mean) * conc, n)


def _add_crowd_traits(table: pd.DataFrame, crowd: CrowdConfig, rng: np.random.Generator,
                      scale: float = 1.0) -> pd.DataFrame:
    """The crowd's per-volunteer rates (zero when the crowd lacks the behaviour); draws only from ``rng``."""
    n = len(table)
    kind = table["kind"].to_numpy().astype(object)
    bulge = np.zeros(n)
    if crowd.bulge_fraction > 0:
        who = (rng.random(n) < crowd.bulge_fraction) & (kind != "random_clicker")
        bulge[who] = rng.uniform(*crowd.bulge_rate, who.sum())
    drate, dcons = np.zeros(n), np.zeros(n)
    det = table["detection_rate"].to_numpy().copy()
    if crowd.distractor_fraction > 0:
        normal_share = max((kind == "normal").mean(), 1e-9)
        who = (rng.random(n) < crowd.distractor_fraction / normal_share) & (kind == "normal")
        kind[who] = "distractor"
        k = int(who.sum())
        det[who] = rng.uniform(*crowd.distractor_detection, k)
        drate[who] = _beta(rng, crowd.distractor_rate, crowd.distractor_rate_spread, k)
        dcons[who] = _beta(rng, crowd.distractor_consistency, crowd.distractor_consistency_spread, k)
    bx, by = np.zeros(n), np.zeros(n)
    if crowd.offset_px[1] > 0:
        length = rng.uniform(*crowd.offset_px, n) * scale
        ang = rng.uniform(0, 2 * np.pi, n)
        bx, by = length * np.cos(ang), length * np.sin(ang)
    return table.assign(kind=kind, detection_rate=det, bulge_rate=bulge, distractor_rate=drate,
                        distractor_consistency=dcons, offset_x=bx, offset_y=by)


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


def _viewers(rng: np.random.Generator, crowd_rng: np.random.Generator, n_subjects: int, config: SimulationConfig,
             activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subject index, volunteer) of every first classification, subject by subject."""
    counts = config.viewer_counts(crowd_rng, n_subjects)
    viewers = assign_viewers(rng, n_subjects, config.max_viewers, activity)
    keep = np.arange(config.max_viewers)[None, :] < counts[:, None]
    return np.repeat(np.arange(n_subjects), counts), viewers[keep]


def simulate_clicks(rng: np.random.Generator, subjects: pd.DataFrame, truth: pd.DataFrame, pop: Population,
                    config: SimulationConfig, objects: pd.DataFrame | None = None,
                    crowd_rng: np.random.Generator | None = None) -> ClickBatch:
    """Where every assigned volunteer clicks on every subject.

    ``subjects``: subject_id, image_width, fwhm_px, galaxy_scale; ``truth``: subject_id, x, y, label, peak_snr
    (and clump_id); optional ``stars`` column in subjects: list of (x, y) of foreground stars (object ids 1..n
    in ``objects``); ``objects``: the scene objects (objects.csv) a crowd may click.
    """
    model = config.volunteer_model
    crowd = config.crowd
    crowd_rng = crowd_rng if crowd_rng is not None else np.random.default_rng([config.seed, 0xC20D])
    vt = pop.table
    sub_idx, vol = _viewers(rng, crowd_rng, len(subjects), config, vt["activity"].to_numpy())
    sid = subjects["subject_id"].to_numpy()[sub_idx]
    first = len(vol)
    # a few repeats: the same volunteer classifies the subject again
    n_rep = rng.binomial(len(vol), model.repeat_fraction) if model.repeat_fraction > 0 else 0
    rep_idx = rng.choice(len(vol), n_rep, replace=False) if n_rep else np.zeros(0, int)
    sid = np.concatenate([sid, sid[rep_idx]])
    vol = np.concatenate([vol, vol[rep_idx]])
    repeat = np.concatenate([np.zeros(first, bool), np.ones(n_rep, bool)])
    cls = pd.DataFrame({"subject_id": sid, "volunteer": vol, "repeat": repeat})

    det = vt["detection_rate"].to_numpy()
    scat = vt["scatter_px"].to_numpy()
    conf = vt["tool_confusion"].to_numpy()
    fp_rate = vt["false_positive_rate"].to_numpy()
    is_random = (vt["kind"] == "random_clicker").to_numpy()
    size = config.image_size

    # true clicks: pair every classification with every clump of its subject
    tr = truth[["subject_id", "x", "y", "label", "peak_snr"]].reset_index(drop=True)
    tr["object_id"] = (truth["clump_id"].to_numpy() if "clump_id" in truth.columns
                       else tr.groupby("subject_id").cumcount().to_numpy())
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
    true_marks = pd.DataFrame({"row": pairs["row"].to_numpy(), "x": x, "y": y, "tool": tool, "target": "clump",
                               "object_id": pairs["object_id"].to_numpy()})

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
    target = np.full(len(rows), "spurious", dtype=object)
    obj = np.full(len(rows), -1, dtype=np.int64)
    if "stars" in sub.columns:
        on_star = (where >= 0.6) & (where < 0.8) & ~is_random[vol_fp]
        for i in np.flatnonzero(on_star):
            stars = sub.at[sid_fp[i], "stars"]
            if len(stars):
                k = rng.integers(len(stars))
                sx, sy = stars[k]
                fx[i], fy[i] = sx + rng.normal(0, scat[vol_fp[i]]), sy + rng.normal(0, scat[vol_fp[i]])
                target[i], obj[i] = "star", 1 + k
    fp_marks = pd.DataFrame({"row": rows, "x": fx, "y": fy, "tool": (rng.random(len(rows)) < 0.3).astype(int),
                             "target": target, "object_id": obj})
    parts = [true_marks, fp_marks, *(m for m in crowd_marks(crowd_rng, cls, vt, objects, crowd, size) if len(m))]
    marks = pd.concat(parts, ignore_index=True)
    if crowd.offset_px[1] > 0:  # a volunteer's own habit: every mark shifted the same way
        mv = cls["volunteer"].to_numpy()[marks["row"].to_numpy()]
        marks["x"] += vt["offset_x"].to_numpy()[mv]
        marks["y"] += vt["offset_y"].to_numpy()[mv]
    marks["x"] = marks["x"].clip(0, size)
    marks["y"] = marks["y"].clip(0, size)
    # volunteers click in no particular order
    marks = marks.iloc[rng.permutation(len(marks))].sort_values("row", kind="stable").reset_index(drop=True)
    return ClickBatch(classifications=cls, marks=marks)


def crowd_marks(rng: np.random.Generator, cls: pd.DataFrame, vt: pd.DataFrame, objects: pd.DataFrame | None,
                crowd: CrowdConfig, size: int) -> list[pd.DataFrame]:
    """Marks a crowd adds on scene objects: bulges and bright companions' centres, and distractors."""
    out: list[pd.DataFrame] = []
    vol = cls["volunteer"].to_numpy()
    scat = vt["scatter_px"].to_numpy()
    objs = objects if objects is not None else pd.DataFrame(columns=["subject_id", "object_id", "kind", "x", "y",
                                                                     "brightness", "size_px"])
    if crowd.bulge_fraction > 0:
        rate = vt["bulge_rate"].to_numpy()[vol]
        rows = np.flatnonzero(rng.random(len(cls)) < rate)
        bulges = objs[objs["kind"] == "bulge"].set_index("subject_id")
        sid = cls["subject_id"].to_numpy()[rows]
        re = bulges["size_px"].reindex(sid).fillna(5.0 * size / 400).to_numpy(float)
        bx = bulges["x"].reindex(sid).fillna(size / 2).to_numpy(float)
        by = bulges["y"].reindex(sid).fillna(size / 2).to_numpy(float)
        sd = np.hypot(scat[vol[rows]], crowd.bulge_spread * re)
        out.append(pd.DataFrame({
            "row": rows, "x": bx + rng.normal(0, 1, len(rows)) * sd, "y": by + rng.normal(0, 1, len(rows)) * sd,
            "tool": (rng.random(len(rows)) < crowd.bulge_odd_share).astype(int), "target": "bulge",
            "object_id": bulges["object_id"].reindex(sid).fillna(0).to_numpy(np.int64)}))
        bright = objs[(objs["kind"] == "companion") & (objs["brightness"] >= crowd.bright_companion_sb)]
        clickers = cls.reset_index().rename(columns={"index": "row"})[vt["bulge_rate"].to_numpy()[vol] > 0]
        pairs = clickers.merge(bright, on="subject_id", how="inner")
        pairs = pairs[rng.random(len(pairs)) < crowd.companion_centre_rate]
        out.append(_object_marks(rng, pairs, scat, crowd.bulge_odd_share, "companion_centre"))
    if crowd.distractor_fraction > 0:
        drate = vt["distractor_rate"].to_numpy()[vol]
        active = rng.random(len(cls)) < drate
        clickers = cls.reset_index().rename(columns={"index": "row"})[active]
        targets = objs[objs["kind"].isin(["star", "companion", "noise_peak"])]
        pairs = clickers.merge(targets, on="subject_id", how="inner")
        p = vt["distractor_consistency"].to_numpy()[pairs["volunteer"].to_numpy()]
        p = np.where(pairs["kind"].to_numpy() == "noise_peak", 0.5 * p, p)
        pairs = pairs[rng.random(len(pairs)) < p]
        out.append(_object_marks(rng, pairs, scat, crowd.distractor_odd_share, None))
    return out


def _object_marks(rng: np.random.Generator, pairs: pd.DataFrame, scat: np.ndarray, odd_share: float,
                  target: str | None) -> pd.DataFrame:
    """One mark per (classification, object) pair, scattered by the volunteer's own click scatter."""
    sd = scat[pairs["volunteer"].to_numpy()]
    n = len(pairs)
    return pd.DataFrame({
        "row": pairs["row"].to_numpy(), "x": pairs["x"].to_numpy(float) + rng.normal(0, 1, n) * sd,
        "y": pairs["y"].to_numpy(float) + rng.normal(0, 1, n) * sd,
        "tool": (rng.random(n) < odd_share).astype(int),
        "target": target if target is not None else pairs["kind"].to_numpy(),
        "object_id": pairs["object_id"].to_numpy(np.int64)})
