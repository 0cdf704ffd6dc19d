"""``clumptool aggregate`` as a plain function: export -> marks -> consensus clumps -> boxes -> files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clumptool.aggregation.boxes import DEFAULT_BOX_SCALE, DEFAULT_BOX_SIZE, clumps_to_boxes
from clumptool.aggregation.consensus import ConsensusConfig, run_consensus
from clumptool.aggregation.duplicates import ON_CONFLICT
from clumptool.aggregation.export import ExportData, ReadOptions, read_export, subject_metadata_from_export
from clumptool.aggregation.galaxies import (
    EARLIER_SUBJECTS_COLUMN,
    EARLIER_VIEWERS_COLUMN,
    with_earlier_subjects,
)
from clumptool.aggregation.machine import check_detections_fit_export, read_detections
from clumptool.aggregation.reducer_defaults import DBSCAN_DEFAULTS, HDBSCAN_DEFAULTS
from clumptool.aggregation.reference import learn_vote_shares, read_reference, single_click_rates
from clumptool.aggregation.report import overview_figure
from clumptool.aggregation.selection import check_something_to_aggregate
from clumptool.aggregation.stopping import (
    AWAITING_COLUMN,
    DEFAULT_MIN_CLASSIFICATIONS,
    DEFAULT_RETIRE_BELOW,
    DEFAULT_RETIREMENT_LIMIT,
    IN_PROGRESS_COLUMN,
    apply_stopping_rule,
    check_stopping_options,
)
from clumptool.aggregation.subjects import RETIRED_COLUMN, read_subjects, workflow_retired
from clumptool.common.catalogue import GALAXIES_FILE
from clumptool.common.errors import ClumptoolError
from clumptool.common.jsonable import jsonable
from clumptool.common.metadata import metadata_key
from clumptool.common.options import at_least, in_range, one_of, positive, raise_problems, whole_number
from clumptool.common.outputs import check_output_location, output_set
from clumptool.common.tables import TABLE_FORMATS, write_table

METHODS = ("clumpscout", "dbscan", "hdbscan")


@dataclass(frozen=True)
class AggregateOptions:
    """Everything ``clumptool aggregate`` can be told, with its default; checked once, on construction.

    ``eps``/``min_samples``/``min_cluster_size`` are the DBSCAN/HDBSCAN reducers' settings: checked whatever
    the method, used only by theirs (:attr:`reducer_params`)."""

    read: ReadOptions = field(default_factory=ReadOptions)
    method: str = "clumpscout"
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    eps: float = DBSCAN_DEFAULTS["eps"]
    min_samples: int = DBSCAN_DEFAULTS["min_samples"]
    min_cluster_size: int = HDBSCAN_DEFAULTS["min_cluster_size"]
    box_scale: float = DEFAULT_BOX_SCALE
    box_size: float = DEFAULT_BOX_SIZE
    fwhm_column: str = "fwhmImagePix"
    drop_central: float = 0.0
    fold_improbable: bool = False
    improbable_threshold: float = 0.7
    table_format: str = "parquet"
    retire_below: float = DEFAULT_RETIRE_BELOW  # the stopping rule (aggregation/stopping.py)
    min_classifications: int = DEFAULT_MIN_CLASSIFICATIONS
    retirement_limit: int = DEFAULT_RETIREMENT_LIMIT  # a galaxy is stalled when the rest cannot settle it
    reference: str | None = None  # an earlier aggregate of galaxies that had their full crowd (reference.py)

    check_odd_tools: bool = False  # --odd-tools was given: each must occur in the task

    def __post_init__(self) -> None:
        validate_options(self)

    @property
    def reducer_params(self) -> dict:
        """The settings of the standard Zooniverse reducer ``method`` (empty for clumpscout)."""
        if self.method == "dbscan":
            return {"eps": self.eps, "min_samples": self.min_samples}
        if self.method == "hdbscan":
            return {"min_cluster_size": self.min_cluster_size, "min_samples": self.min_samples}
        return {}


def _tool_indices(option: str, tools: tuple[int, ...] | None, example: str) -> str | None:
    if tools is None or (len(tools) and all(t >= 0 for t in tools)):
        return None
    return f"{option} {','.join(map(str, tools))}: give tool indices >= 0, e.g. {example}"


def validate_options(o: AggregateOptions) -> None:
    """Every option checked before any work, each problem naming its option and the values it takes."""
    d, r = AggregateOptions, o.read
    raise_problems([
        one_of("--method", o.method, METHODS),
        positive("--box-scale", o.box_scale, f"box side in PSF FWHM, default {d.box_scale:g}"),
        positive("--box-size", o.box_size, f"box side in px, default {d.box_size:g}"),
        at_least("--drop-central", o.drop_central, 0, "0 keeps all marks, else a radius in px"),
        one_of("--format", o.table_format, TABLE_FORMATS),
        positive("--eps", o.eps, f"DBSCAN radius in px, default {d.eps:g}"),
        whole_number("--min-samples", o.min_samples, 1, note=f"marks needed to make a clump, default {d.min_samples}"),
        whole_number("--min-cluster-size", o.min_cluster_size, 2, note=f"default {d.min_cluster_size}"),
        in_range("improbable_threshold", o.improbable_threshold, 0, 1, lo_open=True),
        _tool_indices("--clump-tools", r.clump_tools, "0,1"),
        _tool_indices("--odd-tools", o.consensus.odd_tools, "1"),
        "--task '': give a task id such as T1" if r.task is not None and not r.task.strip() else None,
        None if r.workflow_version is None or all(p.isdigit() for p in r.workflow_version.split(".")) else
        f"--workflow-version {r.workflow_version!r}: give a version like 12.34, or 12 for all 12.x",
        one_of("--on-conflicting-duplicates", r.on_conflicting_duplicates, ON_CONFLICT),
        *check_stopping_options(o.retire_below, o.min_classifications, o.retirement_limit),
    ])


@dataclass
class AggregationResult:
    clumps: pd.DataFrame
    subjects: pd.DataFrame
    volunteers: pd.DataFrame
    boxes: pd.DataFrame
    marks: pd.DataFrame
    summary: dict
    files: dict = field(default_factory=dict)


def drop_central_marks(data: ExportData, radius: float) -> int:
    """Remove marks within ``radius`` px of the image centre (bulge marks); returns how many."""
    if radius <= 0 or len(data.marks) == 0:
        return 0
    m = data.marks.merge(data.frames, on=["subject_id", "frame"], how="left")
    cx, cy = m["image_width"].to_numpy() / 2, m["image_height"].to_numpy() / 2
    central = np.hypot(m["x"].to_numpy() - cx, m["y"].to_numpy() - cy) <= radius
    central &= np.isfinite(cx) & np.isfinite(cy)
    data.marks = data.marks[~central].reset_index(drop=True)
    n = int(central.sum())
    data.report.marks_dropped["central (bulge) marks, --drop-central"] += n
    data.report.marks_used -= n
    return n


def aggregate(
    classifications: str | os.PathLike,
    subjects: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    options: AggregateOptions = AggregateOptions(),
    images: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    detections: str | os.PathLike | None = None,
) -> AggregationResult:
    """Read an export, build the consensus and (if ``out_dir``) write clumps, subjects, volunteers, boxes,
    ``summary.json`` and ``overview.png`` as one output set.

    Options and ``out_dir`` are checked before the export is read; an export with nothing to aggregate (no
    point task, a named task or tool that does not occur, only unusable marks) is refused with what it
    holds. Nothing is written if anything fails, and the previous output set stays as it was."""
    if out_dir is not None:
        check_output_location(out_dir)
    meta = read_subjects(subjects) if subjects is not None else None  # a bad --subjects fails before the export is read
    reference = None
    if options.reference is not None:
        if options.method != "clumpscout":
            raise ClumptoolError(f"--reference needs --method clumpscout (the {options.method} reducer has no "
                                 "stopping rule to inform); drop --reference or use the default method")
        reference = read_reference(options.reference)
    machine = field = None
    if detections is not None:  # the detector as one more annotator (aggregation/machine.py)
        if options.method != "clumpscout":
            raise ClumptoolError(f"--detections needs --method clumpscout (the {options.method} reducer has no "
                                 "annotator model); drop --detections or use the default method")
        read = read_detections(detections)
        machine, field = read.table, read.field
    t0 = time.perf_counter()
    data = read_export(classifications, options.read, progress=progress)
    t_read = time.perf_counter() - t0
    not_looked_at, looked = 0, None
    if detections is not None:
        looked = check_detections_fit_export(read, data)  # the galaxies it looked at (None: every one)
        not_looked_at = 0 if looked is None else data.classifications["subject_id"].nunique() - len(looked)
    not_listed = 0  # checked before the consensus: a wrong file costs a second, not the whole fit
    if meta is not None:
        not_listed = check_subjects_cover_export(pd.Series(data.classifications["subject_id"].unique()), meta,
                                                 subjects)
    note = check_something_to_aggregate(data, options.read,
                                        options.consensus.odd_tools if options.check_odd_tools else None)
    n_central = drop_central_marks(data, options.drop_central)
    if note is None and len(data.marks) == 0 and n_central:
        raise ClumptoolError(f"--drop-central {options.drop_central}: every one of the {n_central:,} usable marks "
                             "is within this radius of the image centre; use a smaller radius (or 0)")
    if meta is None:
        meta = subject_metadata_from_export(data.subject_data)

    t1 = time.perf_counter()
    if options.method == "clumpscout":
        res = run_consensus(data, options.consensus, progress=log, detections=machine,
                            detector_field=field, detector_galaxies=looked)
        clumps, subj, vols, marks = res.clumps, res.subjects, res.volunteers, res.marks
        fit = {"iterations": len(res.history), "best_iteration": res.best_iteration + 1,
               "objective": res.history[res.best_iteration],
               "clump_visibility_weights": {str(k): v for k, v in res.visibility.items()},
               "prior_real": res.prior_real}
        if res.machine:
            fit["detector"] = res.machine
    else:
        from clumptool.aggregation.reducers import reduce_export  # scikit-learn: only these methods need it

        clumps, subj, vols, marks = reduce_export(data, options.method, options.reducer_params,
                                                  odd_tools=options.consensus.odd_tools)
        fit = {}
    t_model = time.perf_counter() - t1

    subj = with_earlier_subjects(_attach_metadata(subj, meta), data.classifications)
    n_unclassified = 0
    if subjects is not None:
        subj, n_unclassified = add_unclassified_subjects(subj, meta, data.classifications)
        retired = workflow_retired(subjects, data.report.workflow_id)
        if retired is not None:  # Zooniverse's own word on which galaxies volunteers no longer see
            # blank: a subject the export does not list in this workflow (the rule then counts to the limit)
            subj[RETIRED_COLUMN] = subj["subject_id"].map(retired).astype("boolean")
    own = (learn_vote_shares(subj, clumps, marks, classifications=data.classifications)
           if options.method == "clumpscout" else None)
    used = reference or own
    singles = single_click_rates(reference, own, options.min_classifications)
    subj = apply_stopping_rule(subj, clumps, marks, options.retire_below, options.min_classifications,
                               retirement_limit=options.retirement_limit,
                               vote_shares=None if own is None else own.prior,
                               reference_vote_shares=None if reference is None else reference.prior,
                               single_click_real=singles)
    fwhm = None
    fwhm_col = metadata_key(options.fwhm_column)
    if fwhm_col in subj.columns:
        fwhm = pd.to_numeric(subj.set_index("subject_id")[fwhm_col], errors="coerce")
    chosen = clumps if options.fold_improbable else clumps[clumps["accepted"]]
    boxes = clumps_to_boxes(chosen, fwhm, options.box_scale, options.box_size, 0.0,
                            options.fold_improbable, options.improbable_threshold)

    n_fwhm = 0 if fwhm is None else int(fwhm.reindex(pd.unique(boxes["subject_id"])).notna().sum())
    summary = _summary(data, clumps, subj, options, n_central, n_fwhm, t_read, t_model, fit)
    summary["subjects_without_classifications"] = n_unclassified
    summary["classified_subjects_not_in_subjects_file"] = not_listed
    if detections is not None:
        summary["galaxies_the_detector_did_not_look_at"] = not_looked_at
    if own is not None:  # what this export says (a later --reference reads it) and what the rule used
        summary["stopping"] = {**own.as_dict(), "rule_vote_shares_from": used.source,
                               "rule_vote_share_median_viewers": used.median_viewers}
    summary["notes"] = [note] if note else []
    if not_listed:
        summary["notes"].append(
            f"--subjects {subjects}: {not_listed:,} of the {int((subj['n_viewers'] > 0).sum()):,} classified subjects "
            "are not in it: they carry no metadata from it (no FWHM: their boxes use --box-size); "
            "download a fresh subjects export (fetch-export --subjects)")
    if not_looked_at:
        summary["notes"].append(
            f"--detections {detections}: predict did not look at {not_looked_at:,} of the export's "
            f"{data.classifications['subject_id'].nunique():,} galaxies (not in its {GALAXIES_FILE}, or without an "
            "image; e.g. uploaded after it ran): there the consensus and the stopping rule are the volunteers' alone "
            "(detector_looked false in the subjects table); run predict on every subject to let it help there too")
    if len(data.marks) and not summary["clumps_accepted"]:
        summary["notes"].append(no_clump_note(data, options))
    if machine is not None and singles is None:
        summary["notes"].append(
            "--detections without a measured single-click rate (no --reference, and no galaxy here has had twice "
            "the classifications of the ones being judged): a single click the detector did not mark is judged as "
            "without a detector (by the crowd model's P(real)), since its vote share alone can call real clumps "
            "strays (on the loop bench's project it retired galaxies whose finished consensus kept 83% of the "
            "clumps), so the detector saves few classifications on galaxies with single clicks; give --reference, "
            "an aggregate of galaxies that had their full crowd")
    if reference is not None and 2 * reference.median_viewers < options.retirement_limit:
        summary["notes"].append(
            f"--reference {options.reference}: its galaxies had a median of {reference.median_viewers:g} "
            f"classifications, fewer than half the retirement limit {options.retirement_limit}; a reference is "
            "meant to hold galaxies that had their full crowd, whose vote shares say what few volunteers cannot")
    result = AggregationResult(clumps=clumps, subjects=subj, volunteers=vols, boxes=boxes, marks=marks,
                               summary=summary)
    if out_dir is not None:
        result.files = write_outputs(result, Path(out_dir), options.table_format, images)
    return result


def no_clump_note(data: ExportData, options: AggregateOptions) -> str:
    """Usable marks but no accepted clump: possible (every mark a false positive), but say so, with the knobs."""
    most = int(data.classifications.groupby("subject_id").size().max())
    text = f"{len(data.marks):,} usable marks gave no accepted clump (at most {most} classifications per subject)"
    if options.method == "dbscan":
        return text + f"; DBSCAN needs --min-samples {options.reducer_params.get('min_samples')} marks within --eps " \
                      f"{options.reducer_params.get('eps')} px: lower them if that is more than volunteers give"
    if options.method == "hdbscan":
        return text + f"; HDBSCAN needs --min-cluster-size {options.reducer_params.get('min_cluster_size')} marks per " \
                      "clump: lower it (and --min-samples) if that is more than volunteers give"
    return text + (f"; every clump's false-positive probability is above --max-false-pos-prob "
                   f"{options.consensus.max_false_pos_prob} (see clumps table): raise it to keep more")


def add_unclassified_subjects(subj: pd.DataFrame, meta: pd.DataFrame,
                              classifications: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
    """Subjects of ``--subjects`` that no classification used: rows with 0 viewers, 0 clumps, not finished.

    A subject the user asked about must not vanish from the outputs: it is listed, and counted. A galaxy's
    earlier subject, whose classifications are its newest subject's (``shown_subject_id`` of
    ``classifications``; aggregation/galaxies.py), is in that row's ``earlier_subject_ids`` instead.
    """
    used = subj["subject_id"]
    if classifications is not None and "shown_subject_id" in classifications:
        used = pd.concat([used, classifications["shown_subject_id"]])
    missing = meta.loc[~meta["subject_id"].isin(used)].drop_duplicates("subject_id")
    if len(missing) == 0:
        return subj, 0
    extra = pd.DataFrame({"subject_id": missing["subject_id"].to_numpy(dtype="int64")})
    for c in subj.columns:
        if c == "subject_id":
            continue
        if c in ("n_viewers", "n_clumps", "n_odd_clumps", EARLIER_VIEWERS_COLUMN):
            extra[c] = 0
        elif c == EARLIER_SUBJECTS_COLUMN:
            extra[c] = ""
        elif c in ("is_finished", "is_stalled"):
            extra[c] = False
        elif c in (IN_PROGRESS_COLUMN, AWAITING_COLUMN):  # nobody has classified it yet
            extra[c] = True
        elif c in missing.columns:
            extra[c] = missing[c].to_numpy()
        else:
            extra[c] = np.nan
    out = pd.concat([subj, extra.astype({c: subj[c].dtype for c in ("n_viewers", "n_clumps", "n_odd_clumps",
                                                                     EARLIER_VIEWERS_COLUMN, "is_finished", "is_stalled",
                                                                     IN_PROGRESS_COLUMN, AWAITING_COLUMN)
                                                if c in subj})],
                    ignore_index=True)
    return out.sort_values("subject_id", kind="stable").reset_index(drop=True), len(extra)


def check_subjects_cover_export(classified: pd.Series, meta: pd.DataFrame, source: object) -> int:
    """How many classified subjects ``--subjects`` does not list; none listed at all is an error (another
    project's or workflow's subjects export: every box would silently fall back to --box-size)."""
    missing = ~classified.isin(meta["subject_id"])
    if len(classified) and missing.all():
        listed = (f"its ids start {', '.join(map(str, meta['subject_id'].head(3)))}" if len(meta)
                  else "it lists no subject")
        raise ClumptoolError(
            f"--subjects {source}: none of the export's {len(classified):,} classified subjects is in it ({listed}; "
            f"the export's start {', '.join(map(str, classified.head(3)))}): the subjects export of another project "
            "or workflow, or an empty one? Give this project's (Lab > Data Exports, or fetch-export --subjects)")
    return int(missing.sum())


def _attach_metadata(subj: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    if meta is None or len(meta.columns) <= 1:
        return subj
    extra = [c for c in meta.columns if c not in subj.columns or c == "subject_id"]
    out = subj.merge(meta[extra], on="subject_id", how="left")
    # parquet needs one type per column: JSON-like values (lists, dicts) are stored as text
    for c in extra:
        if out[c].dtype == object and out[c].map(lambda v: isinstance(v, (list, dict))).any():
            out[c] = out[c].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


def _summary(data: ExportData, clumps: pd.DataFrame, subj: pd.DataFrame, options: AggregateOptions,
             n_central: int, n_fwhm: int, t_read: float, t_model: float, fit: dict) -> dict:
    rep = data.report.as_dict()
    accepted = clumps[clumps["accepted"]]
    return {
        "method": options.method,
        "export": rep,
        "subjects": int(len(subj)),
        "subjects_with_clumps": int((subj["n_clumps"] > 0).sum()),
        "subjects_finished": int(subj["is_finished"].sum()) if "is_finished" in subj else None,
        "subjects_stalled": int(subj["is_stalled"].sum()) if "is_stalled" in subj else None,
        "volunteers": int(len(data.volunteers)),
        "classifications_used": int(len(data.classifications)),
        "marks_used": int(len(data.marks)),
        "central_marks_dropped": n_central,
        "clumps_opened": int(len(clumps)),
        "clumps_accepted": int(len(accepted)),
        "odd_clumps_accepted": int((accepted["label"] == 2).sum()),
        "boxes_from_fwhm_subjects": n_fwhm,
        "fit": fit,
        "seconds": {"read": round(t_read, 3), "model": round(t_model, 3)},
        "options": jsonable(asdict(options)),
    }


def write_outputs(result: AggregationResult, out_dir: Path, fmt: str, images: str | os.PathLike | None) -> dict:
    """Write every output as one set (staged, then published together with a manifest; or not at all)."""
    files = {name: str(out_dir / f"{name}.{fmt}") for name in ("clumps", "subjects", "volunteers", "boxes")}
    files["overview"] = str(out_dir / "overview.png")
    files["summary"] = str(out_dir / "summary.json")
    with output_set(out_dir, "aggregate") as staged:
        for name in ("clumps", "subjects", "volunteers", "boxes"):
            write_table(getattr(result, name), staged.file(f"{name}.{fmt}"), fmt)
        overview_figure(result, staged.file("overview.png"), images)
        result.summary["files"] = files
        staged.file("summary.json").write_text(json.dumps(result.summary, indent=2, default=str), encoding="utf-8")
        staged.info.update({"export": result.summary["export"]["path"], "method": result.summary["method"]})
    return files
