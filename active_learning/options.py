"""The options of ``clumptool select-next-batch``: each default and each constraint defined once.

:class:`SelectOptions` checks every field once, on construction (:mod:`clumptool.common.options`: one
ClumptoolError lists every problem, naming the CLI option); the CLI reads its defaults from it and
:func:`clumptool.active_learning.select.select_next_batch` trusts it. No torch here, so the CLI can read
it at start-up; whether a CUDA ``device`` exists is checked when the run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clumptool.active_learning.manifest import MAX_BYTES
from clumptool.active_learning.panoptes_session import DEFAULT_ENDPOINT, check_endpoint
from clumptool.common.errors import ClumptoolError
from clumptool.common.options import in_range, one_of, optional, raise_problems, whole_number
from clumptool.detection.options import PRECISIONS

#: strategy -> (how the passes are made, which per-image uncertainty ranks the galaxies)
STRATEGIES: dict[str, tuple[str | None, str | None]] = {
    "tta-bald": ("tta", "bald"),
    "tta-freq": ("tta", "freq"),
    "tta-loc": ("tta", "loc"),
    "mc-bald": ("mc", "bald"),
    "entropy": ("single", "entropy"),
    "random": (None, None),
}
DEFAULT_STRATEGY = "tta-bald"
#: how the batch is spread out among the uncertain candidates (active_learning/diversity.py)
DIVERSITY_METHODS = ("kcenter", "kmeans++", "none")
#: how a galaxy's boxes' uncertainties become one value (active_learning/uncertainty.py)
AGGREGATES = ("sum", "max", "topk")


@dataclass(frozen=True)
class SelectOptions:
    """How many galaxies, chosen how (see :mod:`clumptool.active_learning.select`).

    ``candidates`` None: 5 x ``n``; ``max_unfinished`` None: ``n``; ``device`` None: cuda if available,
    else cpu; ``passes``: Monte Carlo dropout passes of ``mc-bald`` (TTA always makes the 8 D4 passes)."""

    n: int = 500
    strategy: str = DEFAULT_STRATEGY
    aggregate: str = "sum"
    topk: int = 3
    candidates: int | None = None
    diversity: str = "kcenter"
    random_control: int = 50
    max_unfinished: int | None = None
    passes: int = 8
    score_thresh: float = 0.05
    batch_size: int = 8
    workers: int = 0
    seed: int = 0
    device: str | int | Sequence[str] | None = None  # as predict's --devices (None: every GPU, else one CPU)
    allow_fewer: bool = False
    num_nodes: int = 1
    lightning_strategy: str = "auto"
    precision: str = "32"

    def __post_init__(self) -> None:
        raise_problems([
            whole_number("--n", self.n, 1),
            one_of("--strategy", self.strategy, STRATEGIES),
            one_of("--aggregate", self.aggregate, AGGREGATES),
            whole_number("--topk", self.topk, 1),
            self._candidates_problem(),
            one_of("--diversity", self.diversity, DIVERSITY_METHODS),
            whole_number("--random-control", self.random_control, 0),
            optional(whole_number, "--max-unfinished", self.max_unfinished, 0),
            whole_number("--passes", self.passes, 2 if self.strategy == "mc-bald" else 1,
                         note="MC dropout needs at least 2"),
            in_range("--score-threshold", self.score_thresh, 0, 1, hi_open=True),
            whole_number("--batch-size", self.batch_size, 1),
            whole_number("--workers", self.workers, 0),
            whole_number("--seed", self.seed, 0),
            whole_number("--num-nodes", self.num_nodes, 1),
            one_of("--precision", str(self.precision), PRECISIONS),
        ])

    def _candidates_problem(self) -> str | None:
        if self.candidates is None or not isinstance(self.n, int) or self.candidates >= self.n:
            return None
        return (f"--candidates ({self.candidates}) must be at least --n ({self.n}); raise --candidates or "
                "leave it out (default 5 x n)")

    @property
    def n_candidates(self) -> int:
        """Most uncertain galaxies kept before the diversity step."""
        return 5 * self.n if self.candidates is None else self.candidates


@dataclass
class UploadConfig:
    """Where and how to upload. ``workflow_id=None`` leaves the set unlinked (link it by hand later)."""

    project_id: int
    workflow_id: int | None
    subject_set_name: str
    endpoint: str = DEFAULT_ENDPOINT
    dry_run: bool = False
    max_bytes: int = MAX_BYTES
    model_version: str | None = None
    metadata_columns: tuple[str, ...] | None = None   # visible/extra metadata (default: ra, dec)
    link_batch: int = 50                              # subjects per link POST (the API takes up to 100)
    max_consecutive_failures: int = 3                 # stop early when the server keeps failing
    check_quota: bool = True                          # compare the user's subject quota with the batch first
    verify_media: bool = False                        # also GET every new image back and compare bytes
    admin: bool = False
    allow_reupload: bool = False                      # upload galaxies that earlier rounds already sent

    def __post_init__(self) -> None:
        if not self.subject_set_name or not self.subject_set_name.strip():
            raise ClumptoolError("--subject-set-name must not be empty; give a name or leave it out (the round "
                                 "name is used)")
        if not 1 <= self.link_batch <= 100:
            raise ClumptoolError(f"link_batch must be between 1 and 100, got {self.link_batch}")
        self.endpoint = check_endpoint(self.endpoint)


@dataclass
class UploadRequest:
    """Where to upload; the subject set name defaults to the round name (known only once the model is read)."""

    project_id: int
    workflow_id: int | None = None
    subject_set_name: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    dry_run: bool = False
    allow_reupload: bool = False

    def config(self, round_name: str, model_version: str) -> UploadConfig:
        return UploadConfig(project_id=self.project_id, workflow_id=self.workflow_id,
                            subject_set_name=self.subject_set_name or round_name, endpoint=self.endpoint,
                            dry_run=self.dry_run, model_version=model_version,
                            allow_reupload=self.allow_reupload)
