"""The options of ``train``, ``evaluate`` and ``predict``: each default and each constraint defined once.

One frozen dataclass per command (:class:`TrainOptions`, :class:`EvaluateOptions`, :class:`PredictOptions`,
plus :class:`MatchSettings` for how evaluate matches), each checking every field once, on construction,
with :mod:`clumptool.common.options`: one ClumptoolError lists every problem, naming the CLI option. The
CLI reads its defaults from these classes and the library trusts a constructed object. The model's own
settings (backbone, image size, crop, ...) are :class:`~clumptool.detection.spec.ModelSpec`'s.

This module imports neither torch nor Lightning, so the CLI can read it at start-up. What depends on the
machine (does this CUDA device exist, does mixed precision have a GPU) is checked where the run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clumptool.aggregation.boxes import DEFAULT_BOX_SCALE, DEFAULT_BOX_SIZE
from clumptool.common.matching import ASSIGNMENTS
from clumptool.common.options import (
    at_least,
    in_range,
    one_of,
    optional,
    positive,
    raise_problems,
    whole_number,
)

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
#: catalogue format -> the file suffixes that ask for it (detection/catalogue.py writes them)
CATALOGUE_FORMATS = {"parquet": (".parquet", ".pq"), "fits": (".fits", ".fit"), "ecsv": (".ecsv",),
                     "votable": (".vot", ".votable", ".xml")}
MATCH_METHODS = ("centre", "iou")
PAPER_NMS_IOU = 0.2  # Popp et al. (2024): class-agnostic NMS at IoU 0.2


def _unit(option: str, value: float | None) -> str | None:
    """A probability-like option in [0, 1] (None = its documented default)."""
    return optional(in_range, option, value, 0, 1)


@dataclass(frozen=True)
class MatchSettings:
    """How a detection is matched to a true clump (see :mod:`clumptool.detection.metrics`)."""

    method: str = "centre"
    iou_thresh: float = 0.5
    max_dist: float | None = None  # pixels; None = one PSF FWHM = true box side / box_scale
    assignment: str = "greedy"
    box_scale: float = DEFAULT_BOX_SCALE

    def __post_init__(self) -> None:
        raise_problems([
            one_of("--match", self.method, MATCH_METHODS),
            in_range("--iou", self.iou_thresh, 0, 1, lo_open=True),
            optional(positive, "--max-dist", self.max_dist, "a centre distance in px"),
            one_of("--assignment", self.assignment, ASSIGNMENTS),
            positive("box_scale", self.box_scale),
        ])

    def describe(self) -> str:
        if self.method == "iou":
            rule = f"IoU >= {self.iou_thresh:g}"
        elif self.max_dist is None:
            rule = f"centre within one PSF FWHM (true box side / {self.box_scale:g})"
        else:
            rule = f"centre within {self.max_dist:g} px"
        return f"{rule}, one-to-one, {self.assignment}"

    def as_dict(self) -> dict:
        return {"method": self.method, "iou_thresh": self.iou_thresh, "max_dist": self.max_dist,
                "assignment": self.assignment, "box_scale": self.box_scale, "rule": self.describe()}


@dataclass(frozen=True)
class EvaluateOptions:
    """Everything ``clumptool evaluate`` can be told besides its inputs and output folder.

    ``score_threshold`` None: the model's operating threshold; ``nms_iou`` 0 or None: no NMS; ``device``
    None: cuda if available, else cpu; ``box_scale``/``box_size``: boxes of a point truth table."""

    settings: MatchSettings = field(default_factory=MatchSettings)
    score_threshold: float | None = None
    nms_iou: float | None = PAPER_NMS_IOU
    min_score: float = 0.05
    batch_size: int = 8
    device: str | None = None
    box_scale: float = DEFAULT_BOX_SCALE
    box_size: float = DEFAULT_BOX_SIZE
    allow_missing_images: bool = False
    allow_no_truth: bool = False
    num_nodes: int = 1  # with device: as predict's --devices/--num-nodes (Lightning's predict path)
    strategy: str = "auto"
    precision: str = "32"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.settings is None:  # None: the default matching
            object.__setattr__(self, "settings", MatchSettings())
        raise_problems([
            _unit("--score-threshold", self.score_threshold),
            _unit("--nms-iou", self.nms_iou),
            _unit("--min-score", self.min_score),
            whole_number("--batch-size", self.batch_size, 1),
            positive("--box-scale", self.box_scale),
            positive("--box-size", self.box_size),
            whole_number("--num-nodes", self.num_nodes, 1),
            one_of("--precision", str(self.precision), PRECISIONS),
            whole_number("--num-workers", self.num_workers, 0),
        ])


@dataclass(frozen=True)
class PredictOptions:
    """Everything ``clumptool predict`` can be told besides its inputs and output path.

    ``score_threshold`` None: the model's operating threshold; ``nms_iou`` 0 or None: no NMS; ``shard_size``
    None: :func:`clumptool.detection.predict.default_shard_size`; ``fmt`` None: from the output suffix."""

    score_threshold: float | None = None
    nms_iou: float | None = PAPER_NMS_IOU
    drop_central: float = 0.0
    batch_size: int = 8
    devices: str | Sequence[str] | int | None = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    shard_size: int | None = None
    num_workers: int = 0
    n_overlay: int = 8
    fmt: str | None = None
    fwhm_column: str = "fwhmImagePix"
    allow_missing_images: bool = False

    def __post_init__(self) -> None:
        raise_problems([
            _unit("--score-threshold", self.score_threshold),
            _unit("--nms-iou", self.nms_iou),
            at_least("--drop-central", self.drop_central, 0, "a radius in px, 0 = keep all"),
            whole_number("--batch-size", self.batch_size, 1),
            whole_number("--num-nodes", self.num_nodes, 1),
            one_of("--precision", str(self.precision), PRECISIONS),
            optional(whole_number, "--shard-size", self.shard_size, 1),
            whole_number("--num-workers", self.num_workers, 0),
            whole_number("--overlay", self.n_overlay, 0, note="0 = no predictions.png"),
            optional(one_of, "--format", self.fmt, tuple(CATALOGUE_FORMATS)),
        ])


@dataclass(frozen=True)
class TrainOptions:
    """How ``clumptool train`` runs (the model's own settings are :class:`ModelSpec`'s).

    ``patience`` None or 0: never stop early; ``max_minutes`` None: no time limit; ``workers`` None: 0 on
    CPU, up to 8 on GPU; ``accept_empty``: publish a model that finds nothing on its validation galaxies;
    ``include_in_progress``: also train on galaxies aggregate's subjects table marks ``in_progress`` (still being
    classified: their consensus is no label yet)."""

    epochs: int = 20
    batch_size: int = 4
    lr: float = 3e-4
    weight_decay: float = 5e-5
    val_fraction: float = 0.2
    patience: int | None = 10
    max_minutes: float | None = None
    devices: str | int | Sequence[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    seed: int = 0
    workers: int | None = None
    cache: bool = False
    accept_empty: bool = False
    include_in_progress: bool = False

    def __post_init__(self) -> None:
        raise_problems([
            whole_number("--epochs", self.epochs, 1),
            whole_number("--batch-size", self.batch_size, 1),
            positive("--lr", self.lr, "a learning rate, e.g. 3e-4"),
            at_least("--weight-decay", self.weight_decay, 0),
            in_range("--val-fraction", self.val_fraction, 0, 1, hi_open=True, note="e.g. 0.2"),
            optional(whole_number, "--patience", self.patience, 0, note="0 = never stop early"),
            optional(positive, "--max-minutes", self.max_minutes, "minutes"),
            optional(whole_number, "--workers", self.workers, 0),
            whole_number("--num-nodes", self.num_nodes, 1),
            whole_number("--seed", self.seed, 0),
            one_of("--precision", str(self.precision), PRECISIONS),
        ])
