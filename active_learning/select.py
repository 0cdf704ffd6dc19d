"""``clumptool select-next-batch`` as a plain function: which galaxies volunteers should look at next.

1. The pool (see :mod:`clumptool.active_learning.pool`) minus labelled galaxies and earlier rounds' picks.
2. Every pool galaxy is scored by the trained detector (:mod:`clumptool.active_learning.scoring`: Lightning's
   predict path, as predict and evaluate, on one CPU, N CPU processes, GPUs or nodes; run with a low score
   threshold, 0.05, so that borderline boxes are seen). Strategies (:data:`STRATEGIES`):

   ``tta-bald``  8 passes over the D4 flips/rotations, boxes mapped back and matched; per-box BALD (default)
   ``tta-freq``  same passes; entropy of how often each box is found
   ``tta-loc``   same passes; localisation disagreement 1 - mean IoU, weighted by score
   ``mc-bald``   ``passes`` Monte Carlo dropout passes (the model needs box dropout); per-box BALD
   ``entropy``   one plain pass; binary entropy of each box score
   ``random``    uniform random order (the baseline; no model run)

   Per-galaxy value: ``sum`` (default), ``max`` or ``topk`` mean over boxes, plus the borderline-empty term
   (see :mod:`clumptool.active_learning.uncertainty`).
3. The top ``candidates`` (default 5 x n; only galaxies with a score above 0 when there are at least n)
   are thinned to n by k-centre (default) or k-means++ on backbone embeddings; ``random_control`` random galaxies from the rest of the pool are added with ``control=True``
   (an unbiased check of what the loop gains, as Galaxy Zoo did). Optionally, labelled galaxies whose
   consensus is unfinished (aggregate's subjects table, ``is_finished == False``, highest risk first) are
   sent back for more volunteers (``strategy = "unfinished"``).
4. Written in ``out`` as one output set (:func:`clumptool.common.outputs.output_set`: staged beside it,
   ``manifest.json`` last, swapped in; a failure or Ctrl-C leaves the previous set byte-identical):
   ``selection.parquet``, ``pool_scores.parquet`` (every scored galaxy), ``cutouts/*.png`` (<= 1 MiB) +
   ``manifest.csv`` (panoptes CLI convention), ``selection.png``.
5. The selection is recorded in the ledger under the round name just before that publish, so later rounds
   exclude it and a re-run of the same round reuses it instead of selecting a different batch. The ledger
   is shared by every round of a project and workflow (:mod:`clumptool.active_learning.state`), never
   inside ``out``. ``upload`` then sends the published batch to Zooniverse through
   :func:`clumptool.active_learning.zooniverse.upload_selection`; a failed or killed upload leaves the
   local selection whole, and the same command resumes it.

Never uploaded twice: galaxies that an earlier round recorded in the ledger, or that the project's
clumptool subject sets on the server already hold (``#galaxy_id``; asked before scoring, so a lost ledger
does not matter), leave the pool before scoring; the uploader refuses them again as a last check. Only
``allow_reupload`` (``--allow-reupload``) or labelled galaxies sent back on purpose (``--include-unfinished``)
pass. Too small a pool is an error unless ``allow_fewer`` (``--allow-fewer``) says to take what is left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clumptool.active_learning.diversity import select_diverse
from clumptool.active_learning.ledger import DEFAULT_LEDGER_NAME, Ledger
from clumptool.active_learning.manifest import write_cutouts, write_manifest
from clumptool.active_learning.options import (  # noqa: F401 (STRATEGIES, AGGREGATES: re-exported)
    AGGREGATES,
    DEFAULT_STRATEGY,
    STRATEGIES,
    SelectOptions,
    UploadRequest,
)
from clumptool.active_learning.panoptes_session import credentials_from_env
from clumptool.active_learning.plots import selection_figure
from clumptool.active_learning.pool import build_pool, read_pool
from clumptool.active_learning.scoring import (  # noqa: F401 (SCORE_COLUMNS, PoolScores: the table's)
    SCORE_COLUMNS,
    PoolScores,
    embed_galaxies,
    score_pool,
)
from clumptool.active_learning.state import check_state_location, default_state_dir
from clumptool.active_learning.zooniverse import UploadConfig, upload_selection, uploaded_galaxies
from clumptool.aggregation.galaxies import GALAXY_ID_KEY
from clumptool.aggregation.stopping import AWAITING_COLUMN
from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import normalise_subject_ids, subject_id_text
from clumptool.common.options import options_from
from clumptool.common.outputs import check_output_location, output_set, read_manifest
from clumptool.common.tables import read_table, true_false_column, write_table
from clumptool.detection.data import unclassified_dropped
from clumptool.detection.io import load_model
from clumptool.detection.predicting import collecting_trainer


@dataclass
class ScoringOptions:
    """How galaxies are scored (see the module docstring); made from a checked :class:`SelectOptions`
    (:meth:`from_select`), so trusted here."""

    strategy: str = SelectOptions.strategy
    aggregate: str = SelectOptions.aggregate
    topk: int = SelectOptions.topk
    passes: int = SelectOptions.passes  # Monte Carlo dropout passes (TTA always uses the 8 D4 elements)
    score_thresh: float = SelectOptions.score_thresh
    match_iou: float = 0.5
    borderline_weight: float = 1.0
    batch_size: int = SelectOptions.batch_size
    workers: int = SelectOptions.workers

    @classmethod
    def from_select(cls, o: SelectOptions) -> ScoringOptions:
        return cls(strategy=o.strategy, aggregate=o.aggregate, topk=o.topk, passes=o.passes,
                   score_thresh=o.score_thresh, batch_size=o.batch_size, workers=o.workers)

    @property
    def mode(self) -> str | None:
        return STRATEGIES[self.strategy][0]

    @property
    def kind(self) -> str | None:
        return STRATEGIES[self.strategy][1]

    @property
    def n_passes(self) -> int:
        return {"tta": 8, "mc": self.passes, "single": 1}.get(self.mode or "", 0)


# ------------------------------------------------------------------------------------------------ choosing


def choose(scored: pd.DataFrame, n: int, candidates: int, diversity: str, embed: Callable[[np.ndarray], np.ndarray]
           | None, random_control: int, seed: int, strategy: str) -> pd.DataFrame:
    """Rows of ``scored`` (positional index into the pool) chosen for the batch, with rank and control flag.

    ``embed(indices) -> embeddings`` is called for the candidates only (None: no diversity step).
    """
    rng = np.random.default_rng(seed)
    m = len(scored)
    scores = scored["score"].to_numpy(dtype=float)
    n = min(n, m)
    if strategy == "random":
        picked = rng.choice(m, size=n, replace=False)
    else:
        order = np.lexsort((np.arange(m), -scores))  # highest score first, ties by pool order
        cand = order[: max(min(candidates, m), n)]
        positive = cand[scores[cand] > 0]
        if len(positive) >= n:  # the diversity step must not trade uncertain galaxies for 0-score ones
            cand = positive
        emb = embed(cand) if (embed is not None and diversity != "none" and len(cand) > n) else None
        local = select_diverse(emb, scores[cand], n, diversity if emb is not None else "none", seed)
        picked = cand[local]
    picked = picked[np.lexsort((picked, -scores[picked]))]  # rank 1 = most uncertain
    rest = np.setdiff1d(np.arange(m), picked)
    n_ctrl = min(max(int(random_control), 0), len(rest))
    ctrl = np.sort(rng.choice(rest, size=n_ctrl, replace=False)) if n_ctrl else np.zeros(0, np.int64)
    ctrl = ctrl[np.lexsort((ctrl, -scores[ctrl]))] if n_ctrl else ctrl
    rows = np.concatenate([picked, ctrl]).astype(np.int64)
    return pd.DataFrame({"pool_index": rows, "rank": np.arange(1, len(rows) + 1),
                         "control": np.r_[np.zeros(len(picked), bool), np.ones(len(ctrl), bool)],
                         "strategy": [strategy] * len(picked) + ["random"] * len(ctrl)})


def unfinished_galaxies(subjects_path: str | os.PathLike, limit: int | None) -> pd.DataFrame:
    """Labelled galaxies whose consensus is not finished, riskiest first: galaxy_id, risk.

    Stalled galaxies (``is_stalled``: more volunteers are not expected to settle them) are left out, and so are
    those the workflow still shows (``awaiting_volunteers``: fewer classifications than the retirement limit, as in
    a lean project until the rule finishes them): uploaded again, one galaxy would be two subjects on Zooniverse,
    its volunteers' clicks split between them. A galaxy is left out when any of its subjects is (a galaxy sent back
    whose new subject has no classification yet is listed twice: the old subject's row, retired unfinished, and the
    new one's from ``--subjects``, still shown)."""
    df = read_table(subjects_path, ("subject_id", "is_finished"))
    missing = [c for c in ("is_stalled", AWAITING_COLUMN) if c not in df.columns]
    if missing:  # without them a galaxy Zooniverse still shows would be uploaded again: one galaxy, two subjects
        raise ClumptoolError(f"--include-unfinished {subjects_path}: no {' or '.join(missing)} column (aggregated by "
                             "an older clumptool), so which unfinished galaxies Zooniverse still shows is unknown and "
                             "sending one of those back would split its volunteers between two subjects; aggregate "
                             "again with this version")
    risk = pd.to_numeric(df["risk"], errors="coerce") if "risk" in df.columns else pd.Series(0.0, index=df.index)
    ids = normalise_subject_ids(df["subject_id"], where=subjects_path, field="subject_id")
    finished = true_false_column(df["is_finished"], ids, subjects_path, "is_finished")
    left_out = np.zeros(len(df), bool)
    for column in ("is_stalled", AWAITING_COLUMN):
        left_out |= true_false_column(df[column], ids, subjects_path, column, blank_is_false=False)
    galaxy = ids.to_numpy(dtype=object).copy()
    if GALAXY_ID_KEY in df.columns:  # a subject select-next-batch uploaded: the pool knows it by its galaxy's id
        own = df[GALAXY_ID_KEY].map(subject_id_text).to_numpy(dtype=object)
        galaxy = np.where(pd.notna(own), own, galaxy)
    out = pd.DataFrame({"galaxy_id": galaxy, "risk": risk.fillna(0.0).to_numpy()})
    # a galaxy with any subject finished, stalled or still shown stays: e.g. one sent back whose new subject nobody
    # has classified yet (listed from --subjects, apart from the old subject's row)
    settled_or_shown = set(galaxy[finished | left_out])
    # a subject nobody classified (listed from --subjects) is no labelled galaxy: there is nothing to send back
    classified = df.index.isin(unclassified_dropped(df).index)
    out = out[classified & ~finished & ~left_out & ~out["galaxy_id"].isin(settled_or_shown).to_numpy()]
    out = out.sort_values(["risk", "galaxy_id"], ascending=[False, True])
    out = out.drop_duplicates("galaxy_id")
    return out.head(limit) if limit is not None else out


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


# ------------------------------------------------------------------------------------------------ command


@dataclass
class SelectionResult:
    """What :func:`select_next_batch` chose and wrote."""

    selection: pd.DataFrame
    round_name: str
    out_dir: Path
    files: dict = field(default_factory=dict)
    resumed: bool = False
    n_pool: int = 0
    n_scored: int = 0
    rate: float = 0.0               # galaxies scored per second
    pool_text: str = ""
    notes: list[str] = field(default_factory=list)
    upload: object | None = None    # UploadReport
    is_global_zero: bool = True     # False: another process of a multi-process run (wrote nothing)

    def format(self, include_upload: bool = True) -> str:
        sel = self.selection
        n_ctrl = int(sel["control"].sum())
        n_unf = int((sel["strategy"] == "unfinished").sum())
        lines = [self.pool_text] if self.pool_text else []
        if self.resumed:
            lines.append(f"round {self.round_name!r} was already selected: reusing its {len(sel)} galaxies "
                         "(the ledger keeps rounds stable; pass a new --round for a new batch)")
        else:
            lines.append(f"scored {self.n_scored:,} galaxies at {self.rate:.2f} galaxies/s")
        lines.extend(self.notes)
        al = sel[~sel["control"] & (sel["strategy"] != "unfinished")]
        strat = al["strategy"].iloc[0] if len(al) else "-"
        lines.append(f"round {self.round_name!r}: {len(al)} galaxies by {strat}, {n_ctrl} random controls"
                     + (f", {n_unf} unfinished labelled galaxies sent back" if n_unf else ""))
        if len(al):
            lines.append(f"  batch score: median {al['score'].median():.3g}, min {al['score'].min():.3g}, "
                         f"max {al['score'].max():.3g}")
        for k, v in self.files.items():
            lines.append(f"  {k}: {v}")
        if self.upload is not None and include_upload:
            lines.append(self.upload.format())
        return "\n".join(lines)




def _check_pool_size(p, n: int, random_control: int, allow_fewer: bool, notes: list[str]) -> tuple[int, int]:
    """(n, random_control) that the pool can give; fewer only with ``allow_fewer``, and then said."""
    left = len(p.table)
    if left == 0:
        raise ClumptoolError(f"nothing left to select: {p.describe()}; every pool galaxy is already labelled or "
                             "was taken by an earlier round; add galaxies to --pool (or check --labelled)")
    if n + random_control <= left:
        return n, random_control
    if not allow_fewer:
        raise ClumptoolError(f"only {left} galaxies are left to select from ({p.describe()}), fewer than --n {n} "
                             f"+ --random-control {random_control} = {n + random_control}; lower --n or "
                             "--random-control, or pass --allow-fewer to take what is left")
    n2 = min(n, left)
    rc2 = min(random_control, left - n2)
    notes.append(f"--allow-fewer: only {left} galaxies left, so {n2} (not {n}) by the strategy and {rc2} "
                 f"(not {random_control}) random controls")
    return n2, rc2


def select_next_batch(model: str | os.PathLike, pool: str | os.PathLike, out: str | os.PathLike,
                      options: SelectOptions | None = None, *, images: str | os.PathLike | None = None,
                      labelled: tuple | list = (), state: str | os.PathLike | None = None,
                      round_name: str | None = None, include_unfinished: str | os.PathLike | None = None,
                      upload=None, plot: bool = True, progress: bool = True, **fields: Any) -> SelectionResult:
    """Select, write and (with ``upload``, an :class:`UploadRequest` or
    :class:`~clumptool.active_learning.zooniverse.UploadConfig`) upload the next batch; see the module
    docstring. Credentials for the upload come only from the environment (PANOPTES_*).

    Order (so nothing is lost and nothing is wrong): every option, the output and ledger locations, the
    endpoint, the credentials and the model are checked first; with a real upload the server is asked which
    galaxies earlier rounds already put there, and those leave the pool (with the ledger's and the
    labelled ones) before scoring. The local outputs are then staged and published as one output set
    (:func:`clumptool.common.outputs.output_set`), the round recorded in the ledger just before the
    publish, and only then is the batch uploaded: a failed or interrupted upload leaves a complete local
    selection, and the same command resumes the upload from the ledger.

    ``state`` is the ledger's folder; by default the one shared by every round of this project and
    workflow (:func:`clumptool.active_learning.state.default_state_dir`). How many galaxies, chosen how:
    ``options`` (a :class:`~clumptool.active_learning.options.SelectOptions`, checked when made) or keyword
    ``fields`` of it (``n=100``, ``strategy="entropy"``, ...).

    ``device`` (as predict's ``--devices``: None = every GPU, else one CPU process; ``2`` without a GPU = 2
    CPU processes), ``num_nodes``, ``lightning_strategy`` and ``precision`` (options) say where the detector
    runs (Lightning). In a multi-process run every process scores its share and all get every score; only the
    first one records, writes and uploads (the others return ``is_global_zero = False``).
    """
    # 1. everything checked before any long work
    o = options_from(SelectOptions, options, fields)
    n, strategy, candidates, diversity, random_control = o.n, o.strategy, o.n_candidates, o.diversity, o.random_control
    max_unfinished, batch_size, workers, seed, device = o.max_unfinished, o.batch_size, o.workers, o.seed, o.device
    allow_fewer, num_nodes, lightning_strategy, precision = o.allow_fewer, o.num_nodes, o.lightning_strategy, o.precision
    options = ScoringOptions.from_select(o)
    if round_name is not None and not round_name.strip():
        raise ClumptoolError("--round must not be empty; give a name or leave it out (al-<model version>)")
    out = check_output_location(out)
    if isinstance(upload, UploadRequest):
        probe = upload.config("probe", "")   # validates the endpoint and the subject set name now
    else:
        probe = upload
    allow_reupload = bool(probe is not None and probe.allow_reupload)
    if state is None:
        state = default_state_dir(probe.endpoint if probe else "", (probe.project_id or None) if probe else None,
                                  probe.workflow_id if probe else None)
    state = check_state_location(Path(state), out)
    if probe is not None and not probe.dry_run:
        credentials_from_env()
    if include_unfinished is not None:
        unfinished_galaxies(include_unfinished, None)  # readable, right columns
    trainer = collecting_trainer("auto" if device is None else device, num_nodes=num_nodes,
                                 strategy=lightning_strategy, precision=precision, progress=progress,
                                 option="--device")
    try:
        net, spec = load_model(model, device="cpu")
    except ClumptoolError as exc:
        raise ClumptoolError(f"--model {model}: {exc}") from None
    round_name = round_name or f"al-{spec.version}"
    if isinstance(upload, UploadRequest):
        upload = upload.config(round_name, spec.version)
    elif isinstance(upload, UploadConfig) and upload.model_version is None:
        upload.model_version = spec.version

    with Ledger(state / DEFAULT_LEDGER_NAME) as ledger:
        previous = ledger.rows(round_name)
        result = SelectionResult(selection=pd.DataFrame(), round_name=round_name, out_dir=out)
        scored, detections, old_figure = None, None, None
        if len(previous):
            sel = _resume(previous, read_pool(pool, images), pool)
            result.resumed = True
            old = read_manifest(out)
            if old is not None and (old.get("info") or {}).get("round") == round_name \
                    and (out / "pool_scores.parquet").exists():
                scored = read_table(out / "pool_scores.parquet")
                old_figure = out / "selection.png" if (out / "selection.png").is_file() else None
        else:
            # 2. the candidate pool: minus labelled galaxies, earlier rounds (ledger) and the server's
            taken = set() if allow_reupload else ledger.already_taken(exclude_round=round_name)
            if upload is not None and not upload.dry_run and not allow_reupload:
                on_server = {g for g, r in uploaded_galaxies(upload, n + random_control).items() if r != round_name}
                taken |= on_server
            p = build_pool(pool, images, labelled, taken)
            result.pool_text = "\n".join([p.describe(), *p.notes])
            unfinished_full = read_pool(pool, images) if include_unfinished is not None else None
            if not len(p.table) and include_unfinished is not None \
                    and len(unfinished_galaxies(include_unfinished, None)):  # nothing new: only send back
                result.notes.append(f"nothing new to select ({p.describe()}): this round only sends back unfinished "
                                    "galaxies")
                sel = pd.DataFrame(columns=["galaxy_id", "image_path", "score", "strategy", "rank", "control"])
                plot = False  # no galaxy was scored: nothing to draw
            else:
                n, random_control = _check_pool_size(p, n, random_control, allow_fewer, result.notes)
                # 3. scoring and choosing
                pool_scores = score_pool(net, spec, p.table, options, seed, progress, trainer=trainer)
                scored, detections = pool_scores.table, pool_scores.detections
                result.n_scored, result.rate = len(scored), pool_scores.rate

                def embed(idx: np.ndarray) -> np.ndarray:
                    return embed_galaxies(net, spec, p.table.iloc[idx], batch_size, workers, trainer=trainer)

                picks = choose(scored, n, candidates, diversity, embed, random_control, seed, strategy)
                sel = p.table.iloc[picks["pool_index"].to_numpy()].reset_index(drop=True)
                extra = scored.iloc[picks["pool_index"].to_numpy()].drop(columns=["galaxy_id"]).reset_index(drop=True)
                sel = pd.concat([sel, extra, picks.drop(columns=["pool_index"])], axis=1)
            if include_unfinished is not None:
                sel = _add_unfinished(sel, include_unfinished, max_unfinished if max_unfinished is not None else n,
                                      unfinished_full)
            sel["round"] = round_name
            sel["model_version"] = spec.version
            sel = _order_columns(sel)
        result.n_pool = len(scored) if scored is not None else 0
        if not trainer.is_global_zero:  # another process of a multi-process run: the first one writes
            result.selection, result.is_global_zero = sel, False
            return result

        # 4. the local outputs as one set; the round enters the ledger just before the publish
        figure = Figure(detections, old_figure) if plot else None
        dry_run = upload is not None and upload.dry_run
        sel = _publish(sel, scored, out, round_name, spec, figure, None if dry_run else ledger, result)
        result.files["ledger"] = str(ledger.path)
        result.selection = sel
        if upload is not None:
            try:
                result.upload = upload_selection(sel, ledger, round_name, upload, progress=progress)
            except ClumptoolError as exc:
                raise ClumptoolError(f"{exc}\nthe selection itself is complete in {out}; fix the problem and run "
                                     "the same command again to upload it (nothing is uploaded twice)") from None
    return result


@dataclass(frozen=True)
class Figure:
    """What selection.png is drawn from: the scoring's detections by galaxy id, or (a resumed round, nothing
    scored) the previous figure of the same round, copied; neither: drawn without boxes."""

    detections: dict | None = None
    previous: Path | None = None


def _publish(sel: pd.DataFrame, scored: pd.DataFrame | None, out: Path, round_name: str, spec,
             figure: Figure | None, ledger, result: SelectionResult) -> pd.DataFrame:
    """Write selection, scores, cutouts, manifest and figure (``figure`` None: no figure) as one output set and
    record the round in ``ledger`` (None: a dry run, recorded nowhere); returns the selection with ``file``
    pointing at the published cutouts."""
    with output_set(out, "select-next-batch") as staged:
        staged.info.update({"round": round_name, "model_version": spec.version, "galaxies": int(len(sel)),
                            "ledger": None if ledger is None else str(ledger.path)})
        if scored is not None:
            write_table(_parquet_safe(scored), staged.file("pool_scores.parquet"))
        sel = write_cutouts(sel, staged.path / "cutouts")
        write_manifest(sel, staged.file("manifest.csv"), round_name)
        sel["file"] = [str(out / Path(f).relative_to(staged.path)) for f in sel["file"]]
        write_table(_parquet_safe(sel), staged.file("selection.parquet"))
        if figure is not None and figure.detections is None and figure.previous is not None:
            shutil.copyfile(figure.previous, staged.file("selection.png"))
        elif figure is not None:
            selection_figure(sel, scored, figure.detections, staged.file("selection.png"))
        if ledger is not None:  # the commit point of the round (a dry run leaves the ledger as it was)
            ledger.record_selection(round_name, sel)
    result.files.update({"selection": str(out / "selection.parquet"), "manifest": str(out / "manifest.csv"),
                         "cutouts": str(out / "cutouts")})
    if scored is not None:
        result.files["pool scores"] = str(out / "pool_scores.parquet")
    if figure is not None:
        result.files["figure"] = str(out / "selection.png")
    return sel


def _order_columns(sel: pd.DataFrame) -> pd.DataFrame:
    first = ["galaxy_id", "image_path", "score", "strategy", "rank", "control", "round", "model_version"]
    return sel[[c for c in first if c in sel.columns] + [c for c in sel.columns if c not in first]]


def _resume(previous: pd.DataFrame, full: pd.DataFrame, pool) -> pd.DataFrame:
    """The selection of a round already in the ledger, rebuilt with the pool's image paths and metadata."""
    prev = previous[["galaxy_id", "score", "strategy", "rank", "control", "round"]].copy()
    prev["control"] = prev["control"].fillna(0).astype(bool)
    missing = sorted(set(prev["galaxy_id"]) - set(full["galaxy_id"]))
    if missing:
        raise ClumptoolError(f"{pool}: {len(missing)} galaxies of round {prev['round'].iloc[0]!r} are not in the "
                             f"pool any more (e.g. {', '.join(missing[:3])}); use the same pool to resume")
    sel = prev.merge(full, on="galaxy_id", how="left").sort_values("rank", kind="stable").reset_index(drop=True)
    return _order_columns(sel)


def _add_unfinished(sel: pd.DataFrame, subjects_path, limit: int, full: pd.DataFrame) -> pd.DataFrame:
    unf = unfinished_galaxies(subjects_path, None)
    unf = unf[~unf["galaxy_id"].isin(set(sel["galaxy_id"]))]
    known = unf[unf["galaxy_id"].isin(set(full["galaxy_id"]))].head(limit)
    if len(unf) and not len(known):
        raise ClumptoolError(f"{subjects_path}: none of its {len(unf)} unfinished galaxies are in the pool "
                             "(their images are needed for the cutouts)")
    rows = full.set_index("galaxy_id").loc[known["galaxy_id"]].reset_index()
    rows["score"] = known["risk"].to_numpy()
    rows["strategy"] = "unfinished"
    rows["control"] = False
    rows["rank"] = np.arange(len(sel) + 1, len(sel) + len(rows) + 1)
    return rows if sel.empty else pd.concat([sel, rows], ignore_index=True)
