"""torchvision Faster R-CNN tuned to clumps: square clump-sized anchors, native resolution, 3 classes.

Differences from torchvision's COCO defaults, and why:

* ``min_size = max_size = image_size``: no upscaling of 200 px crops to 800 px (a 16x waste on CPU);
* square anchors only, two sizes per FPN level a factor 1.41 apart (clump boxes are squares of 4-48 px), and
  an RPN positive IoU of 0.6 instead of 0.7 (a 10 px box 2 px off a 4 px-grid anchor has IoU 0.67);
* fewer RPN proposals (600/300 train, 300/100 test), 128 sampled RoIs per image (not 512) and <= 50
  detections per image: a galaxy has at most ~10 clumps;
* normalisation from the ModelSpec, applied inside the model, so inputs are always [0, 1] images;
* optional dropout in the box head (MC dropout for active learning).

:func:`detect` runs the detector with a score threshold and MC dropout for that call only: the model is
shared (Lightning, several callers) and is never switched into another mode to serve one of them.
"""

from __future__ import annotations

import contextvars
import copy
import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from clumptool.detection.backbones import build_backbone
from clumptool.detection.spec import ModelSpec, weights_name

# MC dropout for the current call only (see detect): a context variable, so threads and callers don't mix
_MC_DROPOUT: contextvars.ContextVar[bool] = contextvars.ContextVar("clumptool_mc_dropout", default=False)


class DropoutTwoMLPHead(nn.Module):
    """torchvision's TwoMLPHead with dropout after each layer (p = 0 gives the original head).

    Dropout is active in training mode and, in eval mode, inside ``detect(..., mc_dropout=True)``.
    """

    def __init__(self, in_channels: int, representation_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.drop6 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.drop7 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @staticmethod
    def _drop(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Dropout):
            return F.dropout(x, layer.p, training=layer.training or _MC_DROPOUT.get())
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1)
        x = self._drop(self.drop6, torch.relu(self.fc6(x)))
        return self._drop(self.drop7, torch.relu(self.fc7(x)))


def cpu_setup() -> None:
    """Denormal floats make CPU convolutions extremely slow (one run did not finish 4 steps in 7 min)."""
    torch.set_flush_denormal(True)


def build_model(spec: ModelSpec, weights: str | os.PathLike | None = None) -> FasterRCNN:
    """A Faster R-CNN for ``spec``; ``weights`` initialise the backbone only (see backbones.build_backbone).

    Loading a trained detector goes through :func:`clumptool.detection.io.load_model` instead. ``spec`` is
    not changed: a training run records its weights first (``spec.with_init_weights(weights)``), so that
    checkpoints rebuild the same layers (batch norm frozen when the backbone starts from weights).
    """
    cpu_setup()
    frozen_bn = spec.init_weights is not None or weights_name(weights) is not None
    backbone = build_backbone(spec.backbone, in_channels=spec.in_channels, weights=weights,
                              fpn_channels=spec.fpn_channels, trainable_stages=spec.trainable_stages,
                              image_size=spec.image_size, frozen_bn=frozen_bn)
    names = [str(i) for i in range(len(spec.anchor_sizes))]
    anchors = AnchorGenerator(sizes=tuple(tuple(float(s * k) for k in spec.anchor_scales) for s in spec.anchor_sizes),
                              aspect_ratios=((1.0,),) * len(names))
    pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    head = DropoutTwoMLPHead(spec.fpn_channels * 7 * 7, spec.representation_size, spec.box_dropout)
    predictor = FastRCNNPredictor(spec.representation_size, spec.num_classes)
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=spec.image_size,
        max_size=spec.image_size,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
        rpn_anchor_generator=anchors,
        rpn_fg_iou_thresh=spec.rpn_fg_iou_thresh,
        rpn_pre_nms_top_n_train=spec.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=spec.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=spec.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=spec.rpn_post_nms_top_n_test,
        box_roi_pool=pool,
        box_head=head,
        box_predictor=predictor,
        box_score_thresh=spec.box_score_thresh,
        box_detections_per_img=spec.detections_per_img,
        box_batch_size_per_image=spec.box_batch_size_per_image,
    )


def has_dropout(model: nn.Module) -> bool:
    """Does the box head have dropout (so that MC dropout means something)?"""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@torch.no_grad()
def detect(model: FasterRCNN, images: list[torch.Tensor], *, score_thresh: float | None = None,
           mc_dropout: bool = False) -> list[dict[str, torch.Tensor]]:
    """torchvision's detections for [0, 1] images on the model's device, the model left as it was.

    ``score_thresh`` (default: the model's ``box_score_thresh``) and ``mc_dropout`` (box-head dropout on
    while the rest stays in eval mode) apply to this call only. The same steps as FasterRCNN's eval forward,
    with the box heads' threshold set on a shallow copy (the weights are shared).
    """
    if model.training:
        raise ValueError("detect() needs the model in eval mode (call model.eval() once)")
    heads = model.roi_heads
    if score_thresh is not None and float(score_thresh) != heads.score_thresh:
        heads = copy.copy(heads)
        heads.score_thresh = float(score_thresh)
    token = _MC_DROPOUT.set(bool(mc_dropout))
    try:
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        detections, _ = heads(features, proposals, batch.image_sizes)
        return model.transform.postprocess(detections, batch.image_sizes, sizes)
    finally:
        _MC_DROPOUT.reset(token)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
