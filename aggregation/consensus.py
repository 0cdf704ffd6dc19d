"""The Clump Scout consensus: alternate marks -> clumps assignment and volunteer-skill updates (hard EM).

Input: the tables of :func:`clumptool.aggregation.export.read_export`. Output: consensus clumps, per-subject
reliability (expected false positives, misses, inaccurate clumps, risk, finished) and per-volunteer skills.
The loop stops when the objective (negative log posterior) stops improving by more than a relative
tolerance, and the best iterate is kept (the reference stopped at the first *rise* of its log-likelihood).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clumptool.aggregation.assign import Assignment, candidate_components
from clumptool.aggregation.central import central_log_likelihoods, centre_rates, near_centre
from clumptool.aggregation.export import ExportData
from clumptool.aggregation.labels import label_votes
from clumptool.aggregation.machine import (
    HUMAN_CONFIDENT,
    MAX_MACHINE_LOG_ODDS,
    FieldOfView,
    add_machine_annotator,
    machine_log_odds_real,
    measured_silence,
)
from clumptool.aggregation.skill import (
    SkillCounts,
    SkillPriors,
    Skills,
    false_pos_costs,
    link_costs,
    log_prior,
    m_step,
    open_costs,
)
from clumptool.aggregation.split import SplitInputs, ranks, split_components
from clumptool.aggregation.visibility import (
    DEFAULT_GRID,
    VisibilityFit,
    candidate_log_likelihoods,
    fit_visibility,
)
from clumptool.common.options import at_least, in_range, positive, raise_problems, whole_number


@dataclass(frozen=True)
class FinishedThresholds:
    """An image is finished when all of these hold (strict inequalities; aggregation-reference §4.10)."""

    max_risk: float = 1.0
    max_expected_false_pos: float = 0.3
    max_expected_false_neg: float = 0.3
    max_expected_inaccurate: float = 0.3


@dataclass(frozen=True)
class ConsensusConfig:
    """Parameters of the consensus model (validated on construction)."""

    priors: SkillPriors = field(default_factory=SkillPriors)
    link_radius: float = 6.0
    max_iterations: int = 30
    tolerance: float = 1e-6
    clump_log_prior_odds: float = 0.0
    odd_tools: tuple[int, ...] = (1,)
    max_false_pos_prob: float = 0.5
    visibility_grid: tuple[float, ...] = DEFAULT_GRID  # (1.0,): every real clump equally easy to see
    required_accuracy_px: float = 2.0
    false_pos_loss: float = 1.0
    false_neg_loss: float = 1.0
    finished: FinishedThresholds = field(default_factory=FinishedThresholds)
    default_image_size: float = 400.0
    # a clump needs marks by this many distinct volunteers (fewer if the image had fewer viewers): one click
    # among 8 viewers is never a clump, whatever the learned visibility says
    min_volunteers: int = 2
    # the central source (bulge): candidates within this share of the image side of the centre are also
    # weighed as "the volunteers who mark centres marked it" (aggregation/central.py); 0 switches it off
    central_radius: float = 0.02
    # learn the share of candidates that are real (prior odds) instead of assuming even odds
    learn_prior_odds: bool = True
    # pseudo-clumps at full visibility per expected real clump (keeps the faint levels from taking over)
    visibility_anchor: float = 0.0
    skill_tolerance: float = 1e-3  # stop when no volunteer's p_fp or p_fn moves more than this
    # learn each volunteer's systematic click offset (shrunk towards 0 by this many pseudo-marks; 0: off)
    offset_prior_marks: float = 5.0

    def __post_init__(self) -> None:
        c = ConsensusConfig
        raise_problems([
            positive("--link-radius", self.link_radius, f"a distance in pixels, default {c.link_radius:g}"),
            in_range("--max-false-pos-prob", self.max_false_pos_prob, 0, 1, lo_open=True,
                     note=f"a probability, default {c.max_false_pos_prob:g}"),
            whole_number("--min-volunteers", self.min_volunteers, 1, note=f"default {c.min_volunteers}"),
            in_range("--central-radius", self.central_radius, 0, 0.5, hi_open=True,
                     note=f"a share of the image side, 0 = off, default {c.central_radius:g}"),
            whole_number("ConsensusConfig.max_iterations", self.max_iterations, 1),
            None if self.visibility_grid and all(0 < v <= 1 for v in self.visibility_grid) else
            "ConsensusConfig.visibility_grid: must be a non-empty list of values in (0, 1]",
            positive("ConsensusConfig.required_accuracy_px", self.required_accuracy_px),
            positive("ConsensusConfig.default_image_size", self.default_image_size),
            at_least("ConsensusConfig.visibility_anchor", self.visibility_anchor, 0),
            at_least("ConsensusConfig.offset_prior_marks", self.offset_prior_marks, 0),
            positive("ConsensusConfig.skill_tolerance", self.skill_tolerance),
        ])


@dataclass
class MarkSet:
    """Flat arrays the model works on; marks sorted by image group (subject, frame)."""

    group: np.ndarray
    vol: np.ndarray
    x: np.ndarray
    y: np.ndarray
    tool: np.ndarray
    classification_id: np.ndarray
    groups: pd.DataFrame  # subject_id, frame, image_width, image_height (one row per group)
    view_group: np.ndarray
    view_vol: np.ndarray
    n_volunteers: int
    x_raw: np.ndarray | None = None  # the marks as clicked (x, y above: corrected for volunteer offsets)
    y_raw: np.ndarray | None = None
    is_machine: np.ndarray | None = None  # per volunteer: a score band of the detector (aggregation/machine.py)
    machine_field: FieldOfView = field(default_factory=FieldOfView)  # where the detector looked

    def __post_init__(self) -> None:
        if self.x_raw is None:
            self.x_raw, self.y_raw = self.x.copy(), self.y.copy()
        if self.is_machine is None:
            self.is_machine = np.zeros(self.n_volunteers, dtype=bool)

    @property
    def n_groups(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class ConsensusResult:
    """What the consensus found: tables for clumps, subjects, volunteers and marks, and how the fit went."""

    clumps: pd.DataFrame
    subjects: pd.DataFrame
    volunteers: pd.DataFrame
    marks: pd.DataFrame
    history: list[float]
    best_iteration: int
    visibility: dict = field(default_factory=dict)  # learned weight of each clump visibility level
    prior_real: float = 0.5  # learned share of candidates (opened clumps and lone marks) that are real
    machine: dict = field(default_factory=dict)  # the detector as an annotator: what was used and left out


def build_markset(data: ExportData, default_image_size: float = 400.0) -> MarkSet:
    """Arrange the export tables into the flat arrays of the model."""
    cls = data.classifications
    marks = data.marks
    subj_frames = pd.concat([
        pd.DataFrame({"subject_id": cls["subject_id"].unique(), "frame": 0}),
        marks[["subject_id", "frame"]],
    ]).drop_duplicates().astype({"subject_id": "int64", "frame": "int64"})
    frames = data.frames.astype({"subject_id": "int64", "frame": "int64"})
    groups = subj_frames.merge(frames, on=["subject_id", "frame"], how="left")
    groups = groups.sort_values(["subject_id", "frame"]).reset_index(drop=True)
    for col in ("image_width", "image_height"):
        groups[col] = groups[col].fillna(groups.groupby("subject_id")[col].transform("max"))
        groups[col] = groups[col].fillna(default_image_size)
    gid = pd.Series(np.arange(len(groups)), index=pd.MultiIndex.from_frame(groups[["subject_id", "frame"]]))
    mark_group = gid.reindex(pd.MultiIndex.from_arrays(
        [marks["subject_id"].astype("int64"), marks["frame"].astype("int64")])).to_numpy()
    order = np.argsort(mark_group, kind="stable")
    view = cls[["subject_id", "volunteer"]].merge(
        groups.reset_index()[["index", "subject_id"]], on="subject_id")
    return MarkSet(
        group=mark_group[order].astype(np.int64),
        vol=marks["volunteer"].to_numpy(np.int64)[order],
        x=marks["x"].to_numpy(np.float64)[order],
        y=marks["y"].to_numpy(np.float64)[order],
        tool=marks["tool"].to_numpy(np.int64)[order],
        classification_id=marks["classification_id"].to_numpy(np.int64)[order],
        groups=groups,
        view_group=view["index"].to_numpy(np.int64),
        view_vol=view["volunteer"].to_numpy(np.int64),
        n_volunteers=len(data.volunteers),
    )


class _Model:
    """Holds the mark arrays and evaluates one EM round."""

    def __init__(self, ms: MarkSet, config: ConsensusConfig):
        self.ms = ms
        self.cfg = config
        g = ms.groups
        self.log_area = np.log(np.maximum(g["image_width"].to_numpy() * g["image_height"].to_numpy(), 1.0))
        self.find_components()

    def find_components(self) -> None:
        """Candidate groups from the current mark positions (re-run once volunteer offsets are known)."""
        ms, config = self.ms, self.cfg
        self.component = candidate_components(ms.group, ms.vol, ms.x, ms.y, config.link_radius)
        comp_sizes = np.bincount(self.component) if len(self.component) else np.zeros(0, int)
        # components where some volunteer has several marks need splitting
        key = self.component * (ms.n_volunteers + 1) + ms.vol
        _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        multi = np.zeros(len(comp_sizes), dtype=bool)
        if len(key):
            multi[self.component[cnt[inv] > 1]] = True
        self.multi_components = np.flatnonzero(multi)
        # the marks of the ambiguous components, one component after another (each in mark order)
        order = np.argsort(self.component, kind="stable")
        starts = np.searchsorted(self.component[order], self.multi_components)
        sizes = np.searchsorted(self.component[order], self.multi_components, side="right") - starts
        self.member_idx = order[np.repeat(starts, sizes) + ranks(sizes)]
        self.member_comp = np.repeat(np.arange(len(sizes)), sizes)

    # -- stage 1: candidate clumps -------------------------------------------------------------------
    def rough_clusters(self) -> np.ndarray:
        """First guess without splitting: in an ambiguous component each volunteer keeps only the mark
        nearest the component's centre (the others wait, unlinked, for the split once skills are known)."""
        ms = self.ms
        cluster = self.component.copy()
        if not len(self.multi_components):
            return cluster
        n = np.bincount(cluster)
        cx = np.bincount(cluster, weights=ms.x) / n
        cy = np.bincount(cluster, weights=ms.y) / n
        idx = self.member_idx
        d2 = (ms.x[idx] - cx[cluster[idx]]) ** 2 + (ms.y[idx] - cy[cluster[idx]]) ** 2
        key = cluster[idx] * (ms.n_volunteers + 1) + ms.vol[idx]
        order = np.lexsort((d2, key))
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        cluster[idx[order[~first]]] = -1
        return cluster

    def candidate_clusters(self, skills: Skills) -> np.ndarray:
        """Candidate clumps: the components, with every ambiguous one split (aggregation/split.py)."""
        ms = self.ms
        cluster = self.component.copy()
        if not len(self.multi_components):
            return cluster
        oc = open_costs(skills, ms.view_group, ms.view_vol, ms.n_groups) - self.cfg.clump_log_prior_odds
        idx, comp = self.member_idx, self.member_comp
        vol = ms.vol[idx]
        s2 = skills.s2[vol]
        first = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
        lab = split_components(SplitInputs(
            comp=comp, x=ms.x[idx], y=ms.y[idx], vol=vol, base=link_costs(skills, vol, np.zeros(len(idx))),
            inv2s2=1.0 / (2 * s2), weight=1.0 / s2, fp_cost=false_pos_costs(skills, vol, self.log_area[ms.group[idx]]),
            open_cost=oc[ms.group[idx[first]]],
        ))
        # new ids after the components', each split component's clumps numbered in turn
        n_new = np.zeros(len(first), dtype=np.int64)
        np.maximum.at(n_new, comp, lab + 1)
        offset = (int(cluster.max()) + 1) + np.cumsum(n_new) - n_new
        cluster[idx] = np.where(lab >= 0, offset[comp] + lab, -1)
        # compact ids
        valid = cluster >= 0
        _, cluster[valid] = np.unique(cluster[valid], return_inverse=True)
        return cluster

    # -- stage 2: links and openings (vectorised) -------------------------------------------------------
    def link_open(self, cluster: np.ndarray, skills: Skills, rounds: int = 3) -> Assignment:
        ms = self.ms
        valid = cluster >= 0
        n_c = int(cluster[valid].max()) + 1 if valid.any() else 0
        cl = np.where(valid, cluster, 0)
        group_of = np.zeros(n_c, dtype=np.int64)
        group_of[cl[valid]] = ms.group[valid]
        oc = open_costs(skills, ms.view_group, ms.view_vol, ms.n_groups) - self.cfg.clump_log_prior_odds
        e = false_pos_costs(skills, ms.vol, self.log_area[ms.group])
        w = 1.0 / skills.s2[ms.vol]
        use = valid.copy()
        cx = cy = None
        for _ in range(rounds):
            wsum = np.bincount(cl[use], weights=w[use], minlength=n_c)
            nx = np.bincount(cl[use], weights=(w * ms.x)[use], minlength=n_c)
            ny = np.bincount(cl[use], weights=(w * ms.y)[use], minlength=n_c)
            has = wsum > 0
            if cx is None:
                cx, cy = np.zeros(n_c), np.zeros(n_c)
            cx = np.where(has, nx / np.where(has, wsum, 1), cx)
            cy = np.where(has, ny / np.where(has, wsum, 1), cy)
            d2 = (ms.x - cx[cl]) ** 2 + (ms.y - cy[cl]) ** 2
            c = link_costs(skills, ms.vol, d2)
            link = valid & (c < e)
            gain = np.bincount(cl[link], weights=(e - c)[link], minlength=n_c)
            is_open = gain > oc[group_of]
            linked = link & is_open[cl]
            if np.array_equal(linked, use):
                break
            use = linked
        return Assignment(cluster=cluster, cl=cl, linked=linked, d2=d2, e=e, is_open=is_open, cx=cx, cy=cy,
                          group_of=group_of, gain=gain, oc=oc, n_c=n_c)

    def objective(self, st: Assignment, skills: Skills) -> float:
        """Negative log posterior (up to a constant) of the assignment and skills."""
        open_part = np.sum(st.oc[st.group_of[st.is_open]] - st.gain[st.is_open])
        return float(np.sum(st.e) + open_part - log_prior(skills, self.cfg.priors))

    def counts(self, st: Assignment, p_false: np.ndarray | None = None,
               p_false_machine: np.ndarray | None = None) -> SkillCounts:
        """Skill statistics of an assignment. ``p_false`` (per candidate clump): the judged probability that
        an opened clump is not real; its marks then count as false positives and it is not a clump the
        viewers missed (so volunteers who consistently mark what is not a clump get a high p_fp).
        ``p_false_machine``: the same judged by the humans alone, for the detector's bands (its reliability is
        learned from what the humans agree on, never from its own votes)."""
        ms = self.ms
        nv = ms.n_volunteers
        linked = st.linked
        opened = np.where(st.is_open, 1.0, 0.0)
        real = opened if p_false is None else opened * (1.0 - p_false)
        real_m = real if p_false_machine is None else opened * (1.0 - p_false_machine)
        n_open_group = np.bincount(st.group_of, weights=real, minlength=ms.n_groups)
        seen = np.bincount(ms.view_vol, weights=n_open_group[ms.view_group], minlength=nv)
        mark_machine = ms.is_machine[ms.vol]
        if p_false_machine is not None and ms.is_machine.any():
            n_open_m = np.bincount(st.group_of, weights=real_m, minlength=ms.n_groups)
            seen_m = np.bincount(ms.view_vol, weights=n_open_m[ms.view_group], minlength=nv)
            seen = np.where(ms.is_machine, seen_m, seen)
        w_link = np.where(linked, np.where(mark_machine, real_m[st.cl], real[st.cl]), 0.0)
        matched = np.bincount(ms.vol, weights=w_link, minlength=nv)
        n_marks = np.bincount(ms.vol, minlength=nv).astype(float)
        return SkillCounts(
            n_marks=n_marks,
            n_false_pos=n_marks - matched,
            n_clumps_seen=seen,
            n_clumps_missed=np.maximum(seen - matched, 0.0),
            n_matched=matched,
            sum_d2=np.bincount(ms.vol, weights=w_link * st.d2, minlength=nv),
        )


# EM iterations at which ambiguous components are split with the current skills; before the first, each
# volunteer keeps one mark per component (rough_clusters). Empty: split once, up front, with the priors.
RESPLIT_AT = (2,)


def run_consensus(
    data: ExportData,
    config: ConsensusConfig = ConsensusConfig(),
    progress: Callable[[str], None] | None = None,
    detections: pd.DataFrame | None = None,
    detector_field: FieldOfView | None = None,
    detector_galaxies: np.ndarray | None = None,
) -> ConsensusResult:
    """Fit the volunteer-skill model to an export and return clumps, subject and volunteer tables.

    Each round: assign marks to candidate clumps (given skills), judge every candidate (real, false hot spot
    or central source, with the learned visibility and prior odds), then re-estimate the skills from the
    *judged* clumps: marks on candidates judged false count as false positives, so a volunteer who
    consistently marks what the crowd does not (bulges, stars) gets a high false-positive rate and their
    clusters are explained as theirs. Stops when no volunteer's rates move by more than ``skill_tolerance`` or
    the objective changes by less than ``tolerance`` (relative); the last round is the result.

    ``detections`` (subject_id, x, y, score[, label]; :func:`clumptool.aggregation.machine.read_detections`):
    the detector joins as one pseudo-volunteer per score band (aggregation/machine.py); its pull on each
    candidate is capped, a clump needs a human mark, and the tables say how much evidence was the machine's.
    ``detector_field``: the part of each image the detector looked at (default the whole image); outside it, its silence
    is no evidence. ``detector_galaxies``: the subject ids predict looked at (None: every galaxy of the export); on
    the others the detector is no annotator.
    """
    is_machine, machine = None, {}
    if detections is not None:
        ann = add_machine_annotator(data, detections, looked_at=detector_galaxies)
        data, is_machine = ann.data, ann.is_machine
        machine = {"detections_used": ann.n_detections_used, "detections_merged": ann.n_merged,
                   "detections_below_bands": ann.n_below_bands,
                   "detections_outside_export": ann.n_outside_export,
                   "subjects_outside_export": len(ann.subjects_outside_export),
                   "subjects_outside_export_first": [int(v) for v in ann.subjects_outside_export[:10]],
                   "field_crop_px": detector_field.crop if detector_field else None,
                   "field_drop_central_px": detector_field.drop_central if detector_field else 0.0}
    ms = build_markset(data, config.default_image_size)
    if is_machine is not None:
        ms.is_machine = is_machine
        ms.machine_field = detector_field or FieldOfView()
    model = _Model(ms, config)
    skills = Skills.from_priors(ms.n_volunteers, config.priors)
    cluster = model.rough_clusters() if RESPLIT_AT else model.candidate_clusters(skills)
    history: list[float] = []
    judged: Judgement | None = None
    offsets = (np.zeros(ms.n_volunteers), np.zeros(ms.n_volunteers))
    for it in range(config.max_iterations):
        if it in RESPLIT_AT:  # split ambiguous components once the skills (and offsets) have moved
            if config.offset_prior_marks > 0:
                model.find_components()
            cluster = model.candidate_clusters(skills)
        st = model.link_open(cluster, skills)
        history.append(model.objective(st, skills))
        judged = judge_candidates(ms, st, skills, config, judged, iterations=8)
        if progress is not None:
            progress(f"iteration {it + 1}: objective {history[-1]:,.1f}")
        new = m_step(model.counts(st, judged.p_false_counted, judged.p_false_machine_counted), config.priors)
        if config.offset_prior_marks > 0:
            offsets = volunteer_offsets(ms, st, judged.p_false_counted, config.offset_prior_marks)
            ms.x, ms.y = ms.x_raw - offsets[0][ms.vol], ms.y_raw - offsets[1][ms.vol]
        moved = max(float(np.max(np.abs(new.p_fp - skills.p_fp), initial=0.0)),
                    float(np.max(np.abs(new.p_fn - skills.p_fn), initial=0.0)))
        settled = len(history) > 1 and abs(history[-2] - history[-1]) <= config.tolerance * abs(history[-1])
        if it >= max(RESPLIT_AT, default=0) + 1 and (moved <= config.skill_tolerance or settled):
            break
        skills = new
    judged = judge_candidates(ms, st, skills, config, judged, iterations=50)
    miss = judged.machine_silent_real
    clumps, mark_table, label_agreement = _clump_table(ms, st, skills, config, judged)
    subjects = _subject_table(ms, skills, clumps, mark_table, config, data, miss)
    volunteers = _volunteer_table(model.counts(st, judged.p_false_counted, judged.p_false_machine_counted), skills,
                                  data, judged.centre_rate, offsets, ms.is_machine, label_agreement)
    vis = judged.fit
    return ConsensusResult(clumps=clumps, subjects=subjects, volunteers=volunteers, marks=mark_table,
                           history=history, best_iteration=len(history) - 1,
                           visibility=dict(zip(vis.grid, np.round(vis.weights, 4).tolist(), strict=True)),
                           prior_real=round(vis.prior_real, 4),
                           machine={**machine, "miss_probability": round(miss, 4)} if machine else {})


def volunteer_offsets(ms: MarkSet, st: Assignment, p_false: np.ndarray, prior_marks: float) -> tuple[np.ndarray, np.ndarray]:
    """Each volunteer's systematic click offset: mean (as-clicked mark - clump centre) over their marks on
    clumps judged real, shrunk towards 0 by ``prior_marks`` pseudo-marks. Some volunteers click consistently
    beside the clump (a habit, or a display offset); corrected, their marks join the crowd's instead of forming
    a second cluster a few pixels away."""
    linked, cl = st.linked, st.cl
    w = np.where(linked, 1.0 - p_false[cl], 0.0)
    n = np.bincount(ms.vol, weights=w, minlength=ms.n_volunteers) + prior_marks
    dx = np.bincount(ms.vol, weights=w * (ms.x_raw - st.cx[cl]), minlength=ms.n_volunteers)
    dy = np.bincount(ms.vol, weights=w * (ms.y_raw - st.cy[cl]), minlength=ms.n_volunteers)
    return dx / n, dy / n


@dataclass
class Judgement:
    """Every candidate of one assignment judged: opened clumps (indexed by candidate id) and lone marks."""

    fit: VisibilityFit
    p_false: np.ndarray  # per candidate clump (n_c); 1 for candidates that were not opened
    p_false_lone: np.ndarray  # per lone (unlinked) mark
    central_source: np.ndarray  # per candidate clump: explained best as the central source
    central: np.ndarray  # per candidate clump: its centre lies within central_radius of the image centre
    n_needed: np.ndarray  # per candidate clump: distinct volunteers needed to accept it
    p_false_counted: np.ndarray  # p_false, and 1 where too few volunteers marked it (for the skill counts)
    centre_rate: np.ndarray  # per volunteer: rate of marking the image centre
    p_false_mark: np.ndarray  # per mark: P(its candidate is not real)
    # the detector (all zero / equal to the above without one): per candidate clump
    human_log_odds: np.ndarray  # log odds of being real from the humans' marks and non-marks (prior included)
    machine_log_odds: np.ndarray  # what the detector's bands added to them (clipped to +-MAX_MACHINE_LOG_ODDS)
    machine_log_odds_lone: np.ndarray  # the same on every lone mark's spot
    p_false_machine_counted: np.ndarray  # p_false_counted as the humans alone judge it (the bands' skills)
    machine_silent_real: float = 1.0  # P(the detector marks nothing | a real clump) (machine.measured_silence)


def judge_candidates(ms: MarkSet, st: Assignment, skills: Skills, cfg: ConsensusConfig, prev: Judgement | None,
                     iterations: int = 50) -> Judgement:
    """False-positive probability of every opened clump and every lone mark (a one-mark candidate)."""
    linked, cl, n_c, is_open = st.linked, st.cl, st.n_c, st.is_open
    ids_open = np.flatnonzero(is_open)
    lone_idx = np.flatnonzero(~linked)
    n_open = len(ids_open)
    cand_group = np.concatenate([st.group_of[ids_open], ms.group[lone_idx]])
    slot = np.full(n_c, -1, dtype=np.int64)
    slot[ids_open] = np.arange(n_open)
    marker_cand = np.concatenate([slot[cl[linked]], n_open + np.arange(len(lone_idx))])
    marker_vol = np.concatenate([ms.vol[linked], ms.vol[lone_idx]])
    human_view = ~ms.is_machine[ms.view_vol]
    human_marker = ~ms.is_machine[marker_vol]
    # the crowd's model weighs the humans' marks and silences; the detector's evidence is added after, capped
    fp_ll, real_ll = candidate_log_likelihoods(skills, ms.view_group[human_view], ms.view_vol[human_view],
                                               ms.n_groups, cand_group, marker_cand[human_marker],
                                               marker_vol[human_marker], cfg.visibility_grid)
    g = ms.groups
    width, height = g["image_width"].to_numpy(float), g["image_height"].to_numpy(float)
    cand_x = np.concatenate([st.cx[ids_open], ms.x[lone_idx]])
    cand_y = np.concatenate([st.cy[ids_open], ms.y[lone_idx]])
    central = np.zeros(len(cand_group), dtype=bool)
    centre_rate = np.zeros(ms.n_volunteers)
    central_ll = np.full(len(cand_group), -np.inf)
    if cfg.central_radius > 0:
        central = near_centre(cand_x, cand_y, width[cand_group], height[cand_group], cfg.central_radius)
        mark_central = near_centre(ms.x, ms.y, width[ms.group], height[ms.group], cfg.central_radius)
        # a central mark counts towards its volunteer's centre rate unless it was judged to be on a real clump
        weight = mark_central * (1.0 if prev is None else prev.p_false_mark)
        centre_rate = centre_rates(ms.view_vol, ms.vol, weight.astype(float), ms.n_volunteers)
        central_ll = np.where(central, central_log_likelihoods(
            centre_rate, ms.view_group[human_view], ms.view_vol[human_view], ms.n_groups, cand_group,
            marker_cand[human_marker], marker_vol[human_marker]), -np.inf)
    false_ll = np.logaddexp(fp_ll, central_ll)
    # viewers and markers that count towards "distinct volunteers": the humans, plus the detector as one
    n_viewers = np.bincount(ms.view_group[human_view], minlength=ms.n_groups)
    machine_viewed = np.bincount(ms.view_group[~human_view], minlength=ms.n_groups) > 0
    n_markers = (np.bincount(marker_cand[human_marker], minlength=len(cand_group))
                 + (np.bincount(marker_cand[~human_marker], minlength=len(cand_group)) > 0))
    n_human = np.bincount(marker_cand[human_marker], minlength=len(cand_group))
    needed = np.minimum(cfg.min_volunteers, np.maximum(n_viewers[cand_group] + machine_viewed[cand_group], 1))
    eligible = (n_markers >= needed) & (n_human >= 1)  # the detector alone never makes a clump
    # weights and prior odds are learned from the candidates that could be accepted: lone clicks (far more
    # numerous, and never clumps) would otherwise set the odds of every cluster that several volunteers marked
    fit = fit_visibility(false_ll, real_ll, cfg.visibility_grid, fit_mask=eligible, iterations=iterations,
                         init=None if prev is None else prev.fit, learn_prior_real=cfg.learn_prior_odds,
                         anchor=cfg.visibility_anchor)
    def prob(log_odds: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))

    lo = lo_human = fit.log_odds_false_pos
    silent_real = 1.0
    if ms.is_machine.any():
        machine_vol = np.flatnonzero(ms.is_machine)
        band = np.searchsorted(machine_vol, marker_vol[~human_marker])
        silent = np.bincount(marker_cand[~human_marker], minlength=len(cand_group)) == 0
        # inside its field, on a galaxy it looked at (predict's galaxies.parquet: aggregation/machine.py)
        seen = ms.machine_field.sees(cand_x, cand_y, width[cand_group], height[cand_group]) & machine_viewed[cand_group]
        silent_real = measured_silence(prob(lo_human)[seen], n_human[seen], silent[seen])
        evidence = machine_log_odds_real(skills.p_fp[machine_vol], skills.p_fn[machine_vol], len(cand_group),
                                         marker_cand[~human_marker], band, silent_real)
        evidence = np.where(silent & ~seen, 0.0, evidence)  # it never looked there
        # a clump every viewer missed may lie outside the field too: there the detector's silence is certain
        sure = (n_human >= 2) & (prob(lo_human) < HUMAN_CONFIDENT)
        share_seen = (np.count_nonzero(seen & sure) + 1.0) / (np.count_nonzero(sure) + 2.0)
        silent_real = share_seen * silent_real + (1.0 - share_seen)
        lo = lo_human - np.clip(evidence, -MAX_MACHINE_LOG_ODDS, MAX_MACHINE_LOG_ODDS)
        # a spot only the detector marked (never a clump; it can keep its galaxy open): its prior is the band's
        # learned share of false marks, updated by the humans' silence, instead of the share of real candidates
        # (which assumes someone in the crowd thought it worth a click)
        alone = n_human == 0
        if alone.any():
            prior_lo = np.log1p(-fit.prior_real) - np.log(fit.prior_real) if cfg.learn_prior_odds else 0.0
            lo = np.where(alone, lo_human - prior_lo - evidence, lo)

    p_all, p_human = prob(lo), prob(lo_human)
    p_false = np.ones(n_c)
    p_false[ids_open] = p_all[:n_open]
    central_source = np.zeros(n_c, dtype=bool)
    central_source[ids_open] = (central_ll > fp_ll)[:n_open] & (p_all[:n_open] >= cfg.max_false_pos_prob)
    central_c = np.zeros(n_c, dtype=bool)
    central_c[ids_open] = central[:n_open]

    def per_candidate(values: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(n_c, fill, dtype=np.asarray(values).dtype)
        out[ids_open] = values[:n_open]
        return out

    n_needed = per_candidate(needed, 1)
    human_lo_c = per_candidate(-lo_human, 0.0)
    machine_lo_c = per_candidate(lo_human - lo, 0.0)
    not_eligible = ~per_candidate(eligible, False)
    counted = np.where(not_eligible, 1.0, p_false)
    counted_machine = np.where(not_eligible, 1.0, per_candidate(p_human, 1.0))
    p_lone = p_all[n_open:]
    p_mark = np.ones(len(ms.x))
    p_mark[linked] = counted[cl[linked]]
    p_mark[lone_idx] = np.where(~eligible[n_open:], 1.0, p_lone)  # a lone mark is never accepted then
    return Judgement(fit=fit, p_false=p_false, p_false_lone=p_lone, central_source=central_source,
                     central=central_c, n_needed=n_needed, p_false_counted=counted, centre_rate=centre_rate,
                     p_false_mark=p_mark, human_log_odds=human_lo_c, machine_log_odds=machine_lo_c,
                     p_false_machine_counted=counted_machine, machine_log_odds_lone=(lo_human - lo)[n_open:],
                     machine_silent_real=silent_real)


def _clump_table(ms: MarkSet, st: Assignment, skills: Skills, cfg: ConsensusConfig, judged: Judgement,
                 ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Clumps and marks tables, and each volunteer's label agreement rate. ``n_marks`` / ``n_viewers`` /
    ``odd_vote`` are the humans'; ``label`` and ``odd_log_odds`` their tool votes weighted by each volunteer's
    label skill (aggregation/labels.py); with a detector, ``human_evidence`` / ``machine_evidence`` split the log
    odds of being real."""
    linked, cl, n_c = st.linked, st.cl, st.n_c
    is_open = st.is_open
    human_view = ~ms.is_machine[ms.view_vol]
    n_viewers = np.bincount(ms.view_group[human_view], minlength=ms.n_groups)
    fpp = judged.p_false
    precision = np.bincount(cl[linked], weights=1.0 / skills.s2[ms.vol][linked], minlength=n_c)
    inacc = np.exp(-(cfg.required_accuracy_px**2) * np.maximum(precision, 1e-12) / 2.0)
    risk = cfg.false_pos_loss * fpp + inacc * (cfg.false_neg_loss + (1 - fpp) * cfg.false_pos_loss)
    human_link = linked & ~ms.is_machine[ms.vol]
    n_marks = np.bincount(cl[human_link], minlength=n_c)
    n_machine = np.bincount(cl[linked & ~human_link], minlength=n_c)
    odd = np.isin(ms.tool, np.asarray(cfg.odd_tools))
    n_odd = np.bincount(cl[human_link], weights=odd[human_link].astype(float), minlength=n_c)
    ids = np.flatnonzero(is_open)
    groups = ms.groups
    g = st.group_of[ids]
    mean_tool = n_odd[ids] / np.maximum(n_marks[ids], 1)
    enough = ((n_marks[ids] + (n_machine[ids] > 0)) >= judged.n_needed[ids]) & (n_marks[ids] >= 1)
    accepted = (fpp[ids] < cfg.max_false_pos_prob) & enough
    accepted_candidate = np.zeros(n_c, bool)
    accepted_candidate[ids] = accepted
    votes = label_votes(ms.vol[human_link], cl[human_link], odd[human_link], accepted_candidate, len(skills.p_fp))
    has_machine = bool(ms.is_machine.any())
    clumps = pd.DataFrame({
        "subject_id": groups["subject_id"].to_numpy()[g],
        "frame": groups["frame"].to_numpy()[g],
        "x": st.cx[ids],
        "y": st.cy[ids],
        "label": votes.label[ids],
        "odd_vote": mean_tool,
        "odd_log_odds": votes.odd_log_odds[ids],
        "n_marks": n_marks[ids],
        "n_viewers": n_viewers[g],
        "false_pos_prob": fpp[ids],
        "inaccurate_prob": inacc[ids],
        "risk": risk[ids],
        "position_error_px": np.sqrt(1.0 / np.maximum(precision[ids], 1e-12)),
        "image_width": groups["image_width"].to_numpy()[g],
        "image_height": groups["image_height"].to_numpy()[g],
        "accepted": accepted,
        "central": judged.central[ids],
        "central_source": judged.central_source[ids],
        "evidence": _evidence(n_marks[ids], n_viewers[g], fpp[ids], accepted, enough, judged.central_source[ids],
                              judged.n_needed[ids], cfg.max_false_pos_prob),
        "_candidate": ids,
    })
    if has_machine:
        clumps["n_machine_marks"] = n_machine[ids]
        # False: a galaxy predict did not look at (its silence there is no evidence; stopping.py judges it without)
        clumps["detector_looked"] = (np.bincount(ms.view_group[~human_view], minlength=ms.n_groups) > 0)[g]
        machine_link = linked & ~human_link
        n_machine_odd = np.bincount(cl[machine_link], weights=odd[machine_link].astype(float), minlength=n_c)
        clumps["machine_odd_vote"] = n_machine_odd[ids] / np.maximum(n_machine[ids], 1)  # the detector's label
        clumps["human_evidence"] = judged.human_log_odds[ids]
        clumps["machine_evidence"] = judged.machine_log_odds[ids]
        clumps["evidence"] = _machine_evidence(clumps["evidence"].to_numpy(str), n_machine[ids],
                                               judged.human_log_odds[ids], judged.machine_log_odds[ids])
    clumps = clumps.sort_values(["subject_id", "frame", "y", "x"]).reset_index(drop=True)
    clumps.insert(1, "clump_id", clumps.groupby("subject_id").cumcount().astype("int64"))
    clump_of_candidate = np.full(n_c, -1, dtype=np.int64)
    clump_of_candidate[clumps["_candidate"].to_numpy()] = clumps["clump_id"].to_numpy()
    clumps = clumps.drop(columns="_candidate")
    marks = pd.DataFrame({
        "classification_id": ms.classification_id,
        "subject_id": groups["subject_id"].to_numpy()[ms.group],
        "frame": groups["frame"].to_numpy()[ms.group],
        "volunteer": ms.vol,
        "x": ms.x_raw,
        "y": ms.y_raw,
        "tool": ms.tool,
        "clump_id": np.where(linked, clump_of_candidate[cl], -1),
        "centre_rate": judged.centre_rate[ms.vol],  # its volunteer's rate of marking image centres
    })
    # probability that a lone false-positive mark was on a real clump after all (feeds the expected misses)
    real_if_unlinked = np.zeros(len(ms.vol))
    real_if_unlinked[~linked] = 1.0 - judged.p_false_lone
    marks["real_if_unlinked_prob"] = real_if_unlinked
    if has_machine:
        marks["machine"] = ms.is_machine[ms.vol]
        lone_evidence = np.zeros(len(ms.vol))
        lone_evidence[~linked] = judged.machine_log_odds_lone
        marks["machine_evidence"] = lone_evidence  # the detector's on a lone mark's spot (0 for linked marks)
    return clumps, marks, votes.volunteer_agreement


def _evidence(n_marks: np.ndarray, n_viewers: np.ndarray, fpp: np.ndarray, accepted: np.ndarray,
              enough: np.ndarray, central_source: np.ndarray, n_needed: np.ndarray, max_fpp: float) -> np.ndarray:
    """Why each candidate was accepted or rejected, in words (the clumps table's ``evidence`` column)."""
    add = np.char.add
    base = add(add(add(add(np.asarray(n_marks).astype(str), "/"), np.asarray(n_viewers).astype(str)),
                   " volunteers, P(false) "), np.char.mod("%.2g", np.asarray(fpp, dtype=float)))
    why = np.where(accepted, "accepted: ", "rejected: ")
    reason = np.where(
        accepted, "",
        np.where(~enough, add(add("; fewer than ", np.asarray(n_needed).astype(str)), " volunteers marked it"),
                 np.where(central_source, "; the central source (marked by those who mark image centres)",
                          f"; P(false) >= {max_fpp:g}")))
    return add(add(why, base), reason).astype(object)


def _machine_evidence(text: np.ndarray, n_machine: np.ndarray, human: np.ndarray, machine: np.ndarray) -> np.ndarray:
    """The evidence text with the detector's share: whether it marked the clump and the log odds it added."""
    said = np.where(n_machine > 0, "; the detector marked it", "; the detector did not mark it")
    share = np.char.mod("%+.1f", machine)
    return np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(text.astype(str), said), " (log odds real: humans "),
                                               np.char.mod("%+.1f", human)), ", detector "),
                       np.char.add(share, ")")).astype(object)


def _subject_table(ms: MarkSet, skills: Skills, clumps: pd.DataFrame, marks: pd.DataFrame,
                   cfg: ConsensusConfig, data: ExportData, machine_miss: float = 1.0) -> pd.DataFrame:
    """Per subject: clumps, expected errors of the model; ``n_viewers`` counts human classifications only."""
    groups = ms.groups
    subj = pd.DataFrame({"subject_id": np.sort(data.classifications["subject_id"].unique())})
    human_cls = data.classifications[~ms.is_machine[data.classifications["volunteer"].to_numpy()]]
    n_view = human_cls.groupby("subject_id").size().rename("n_viewers")
    subj = subj.merge(n_view, on="subject_id", how="left")
    acc = clumps[clumps["accepted"]].assign(is_odd=lambda c: (c["label"] == 2).astype("int64"))
    rej = clumps[~clumps["accepted"]]
    agg = acc.groupby("subject_id").agg(
        n_clumps=("x", "size"), n_odd_clumps=("is_odd", "sum"),
        expected_num_false_pos=("false_pos_prob", "sum"), expected_num_inaccurate=("inaccurate_prob", "sum"),
        clump_risk=("risk", "sum"),
    )
    subj = subj.merge(agg, on="subject_id", how="left")
    # expected misses: rejected clumps and lone false-positive marks that were real after all, plus clumps that
    # every viewer missed (dataset clump rate x product of p_fn)
    miss_rejected = (1 - rej["false_pos_prob"]).groupby(rej["subject_id"]).sum()
    miss_lone = marks["real_if_unlinked_prob"].groupby(marks["subject_id"]).sum()
    rate = len(acc) / max(len(groups), 1)
    log_all_missed = np.bincount(ms.view_group, weights=np.log(np.clip(skills.p_fn[ms.view_vol], 1e-12, 1)),
                                 minlength=ms.n_groups)
    unseen = pd.Series(rate * np.exp(log_all_missed), index=groups["subject_id"]).groupby(level=0).sum()
    subj["expected_num_false_neg"] = (
        subj["subject_id"].map(miss_rejected).fillna(0.0)
        + subj["subject_id"].map(miss_lone).fillna(0.0)
        + subj["subject_id"].map(unseen).fillna(0.0)
    )
    for c in ("n_clumps", "n_odd_clumps"):
        subj[c] = subj[c].fillna(0).astype("int64")
    for c in ("expected_num_false_pos", "expected_num_inaccurate", "clump_risk"):
        subj[c] = subj[c].fillna(0.0)
    subj["risk"] = subj["clump_risk"] + cfg.false_neg_loss * subj["expected_num_false_neg"]
    subj = subj.drop(columns="clump_risk")
    f = cfg.finished
    subj["is_finished"] = (
        (subj["risk"] < f.max_risk)
        & (subj["expected_num_false_pos"] < f.max_expected_false_pos)
        & (subj["expected_num_false_neg"] < f.max_expected_false_neg)
        & (subj["expected_num_inaccurate"] < f.max_expected_inaccurate)
    )
    if ms.is_machine.any():
        looked = data.classifications.loc[ms.is_machine[data.classifications["volunteer"].to_numpy()], "subject_id"]
        subj["detector_looked"] = subj["subject_id"].isin(looked.unique())
        # P(the detector misses a real clump), for clumps every viewer missed: certain where it never looked
        subj["machine_miss_prob"] = np.where(subj["detector_looked"], machine_miss, 1.0)
    sizes = groups[groups["frame"] == 0][["subject_id", "image_width", "image_height"]]
    return subj.merge(sizes, on="subject_id", how="left")


def _volunteer_table(counts: SkillCounts, skills: Skills, data: ExportData, centre_rate: np.ndarray,
                     offsets: tuple[np.ndarray, np.ndarray], is_machine: np.ndarray,
                     label_agreement: np.ndarray) -> pd.DataFrame:
    vols = data.volunteers.copy()
    if is_machine.any():
        vols["machine"] = is_machine  # the detector's score bands: their learned rates are its reliability
    n_cls = data.classifications.groupby("volunteer").size()
    vols["n_classifications"] = vols["volunteer"].map(n_cls).fillna(0).astype("int64")
    vols["p_fp"] = skills.p_fp
    vols["p_fn"] = skills.p_fn
    vols["scatter_px"] = np.sqrt(skills.s2)
    vols["n_marks"] = counts.n_marks.astype("int64")
    vols["centre_mark_rate"] = centre_rate
    vols["label_agreement"] = np.where(is_machine, np.nan, label_agreement)  # P(right tool), aggregation/labels.py
    vols["offset_x_px"], vols["offset_y_px"] = offsets
    vols["n_false_pos"] = np.round(counts.n_false_pos).astype("int64")
    vols["n_clumps_seen"] = np.round(counts.n_clumps_seen).astype("int64")
    vols["n_matched"] = np.round(counts.n_matched).astype("int64")
    return vols
