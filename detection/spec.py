"""ModelSpec: everything about a trained detector that is not a weight, saved as ``model.json``.

evaluate / predict / select-next-batch read it so that nobody has to repeat options (image size, crop,
normalisation, classes ...) and so that a model is never fed images prepared differently from training
(the models released with Popp et al. 2024 were trained on x4-upscaled crops and run on full images, so
clumps looked half their size to the network).

A spec is frozen: code that needs other settings makes a new one (``dataclasses.replace`` or
:meth:`ModelSpec.with_init_weights`), so a spec handed to a function is never changed behind its owner's back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from clumptool.common.atomic import write_text_atomic
from clumptool.common.errors import ClumptoolError
from clumptool.common.options import in_range, optional, raise_problems, whole_number

CLASSES = ["background", "clump", "odd_clump"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def default_normalisation(backbone: str, in_channels: int) -> tuple[list[float], list[float]]:
    """Mean/std the encoder expects for [0, 1] inputs.

    Zoobot encoders were trained on [0, 1] images without normalisation (mean 0, std 1) even though their
    hub config lists ImageNet values; torchvision's ImageNet ResNet-50 expects ImageNet mean/std.
    """
    if backbone.startswith("torchvision_") and in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    if backbone.startswith("torchvision_"):
        return [float(sum(IMAGENET_MEAN) / 3)] * in_channels, [float(sum(IMAGENET_STD) / 3)] * in_channels
    return [0.0] * in_channels, [1.0] * in_channels


def new_version() -> str:
    """A provenance string: UTC time plus a few random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


NO_WEIGHTS = ("", "none", "random")


def weights_name(weights: str | os.PathLike | None) -> str | None:
    """``weights`` as recorded in a spec: None for random initialisation (None, "", "none", "random")."""
    return None if weights is None or str(weights).lower() in NO_WEIGHTS else str(weights)


@dataclass(frozen=True)
class ModelSpec:
    """The architecture and input preparation of a detector (weights live beside it)."""

    backbone: str = "convnext_nano"
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    image_size: int = 200
    crop: int | None = 200
    in_channels: int = 3
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    anchor_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64])  # base side per FPN level
    box_dropout: float = 0.0
    fits_bands: list[int] | None = None
    version: str = field(default_factory=new_version)
    # --- additions beyond the shared contract (all have defaults) ---
    fpn_channels: int = 128
    representation_size: int = 512          # width of the two-layer box head
    trainable_stages: int | None = None     # None = whole backbone trains; k = only the last k of 4 stages
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100
    detections_per_img: int = 50
    box_batch_size_per_image: int = 128     # RoIs sampled per image for the box head (COCO: 512)
    anchor_scales: list[float] = field(default_factory=lambda: [1.0, 1.41])  # anchors per level: size x scale
    rpn_fg_iou_thresh: float = 0.6          # COCO 0.7: too strict for 8-20 px boxes on a 4 px grid
    box_score_thresh: float = 0.05
    init_weights: str | None = None         # where the backbone's initial weights came from (provenance)
    # --- what ties the settings to their weights (written by save_model; None in models made before them) ---
    score_threshold: float | None = None    # operating score threshold chosen by train on its validation galaxies
    settings_sha256: str | None = None      # digest of every setting above (see settings_digest)
    weights_sha256: str | None = None       # digest of model.safetensors' bytes

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise one ClumptoolError listing every inconsistent setting (named as its train option)."""
        n = self.in_channels
        raise_problems([
            whole_number("--image-size", self.image_size, 32, note="the backbone downsamples 32 times"),
            optional(whole_number, "--crop", self.crop, 8, note="a side in px, or none for the whole image"),
            whole_number("--in-channels", n, 1),
            None if len(self.mean) == n and len(self.std) == n else
            f"mean/std need one value per input channel ({n}), got {len(self.mean)}/{len(self.std)}",
            None if all(s > 0 for s in self.std) else f"std must be positive, got {self.std}",
            None if len(self.classes) >= 2 and self.classes[0] == "background" else
            f"classes must start with 'background', got {self.classes}",
            in_range("--box-dropout", self.box_dropout, 0, 1, hi_open=True),
            None if len(self.anchor_sizes) == 4 and all(a > 0 for a in self.anchor_sizes) else
            f"--anchor-sizes {','.join(map(str, self.anchor_sizes))}: needs 4 positive sizes (one per FPN level, "
            "strides 4/8/16/32)",
            None if self.anchor_scales and all(a > 0 for a in self.anchor_scales) else
            f"anchor_scales must be positive, got {self.anchor_scales}",
            optional(whole_number, "--trainable-stages", self.trainable_stages, 0, 4,
                     note="leave it out to train the whole backbone"),
            optional(in_range, "score_threshold", self.score_threshold, 0, 1),
            None if self.fits_bands is None or len(self.fits_bands) == n else
            f"--fits-bands {self.fits_bands}: must list one band per input channel ({n})",
        ])

    def with_init_weights(self, weights: str | os.PathLike | None) -> ModelSpec:
        """This spec recording ``weights`` as the backbone's initial weights (unchanged for none/random).

        Recorded before the model is built, so that a checkpoint rebuilds the same layers (batch norm is
        frozen when a backbone starts from weights) and model.json says where training started.
        """
        name = weights_name(weights)
        return self if name is None else dataclasses.replace(self, init_weights=name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def settings(self) -> dict:
        """The settings that decide what the model outputs: everything but the version and the digests."""
        return {k: v for k, v in self.to_dict().items() if k not in PROVENANCE_FIELDS}

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the spec atomically as indented JSON."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict, source: str = "model spec") -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClumptoolError(f"{source}: unknown field(s) {', '.join(unknown)} (written by a newer clumptool?)")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ClumptoolError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ModelSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ClumptoolError(f"{path}: model spec not found") from exc
        except (OSError, ValueError) as exc:
            raise ClumptoolError(f"{path}: cannot read model spec ({exc})") from exc
        if not isinstance(data, dict):
            raise ClumptoolError(f"{path}: model spec must be a JSON object")
        return cls.from_dict(data, source=str(path))


PROVENANCE_FIELDS = ("version", "settings_sha256", "weights_sha256")


def settings_digest(settings: dict) -> str:
    """SHA-256 of the settings as canonical JSON (sorted keys), so that any edit of model.json shows."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tied_version(stamp: str, settings_sha256: str, weights_sha256: str) -> str:
    """``<UTC time>-<12 hex>``: the hex part is derived from both digests, so the version names one model."""
    return f"{stamp}-{hashlib.sha256((settings_sha256 + weights_sha256).encode()).hexdigest()[:12]}"


def version_stamp(version: str) -> str:
    """The UTC time part of a version string."""
    return version.split("-", 1)[0]


def default_anchor_sizes(image_size: int, crop: int | None) -> list[int]:
    """8/16/32/64 original pixels (clump boxes: 4-48 px, median 17 px on 400 px images) in working pixels."""
    scale = image_size / crop if crop else 1.0
    return [max(4, int(round(s * scale))) for s in (8, 16, 32, 64)]


def make_spec(backbone: str = "convnext_nano", *, in_channels: int = 3, mean: list[float] | None = None,
              std: list[float] | None = None, **kwargs) -> ModelSpec:
    """A ModelSpec with the normalisation the backbone expects and anchors scaled to the working size,
    unless given explicitly."""
    dmean, dstd = default_normalisation(backbone, in_channels)
    if kwargs.get("anchor_sizes") is None:
        kwargs["anchor_sizes"] = default_anchor_sizes(kwargs.get("image_size", 200), kwargs.get("crop", 200))
    return ModelSpec(backbone=backbone, in_channels=in_channels, mean=list(mean or dmean), std=list(std or dstd),
                     **kwargs)
