"""Multi-scale encoders (Zoobot/timm, or torchvision's ImageNet ResNet-50) with a feature pyramid.

Every backbone returns 4 FPN maps named "0".."3" at strides 4/8/16/32 (one square anchor size each), so that
clump-sized anchors (8-64 px) sit on the finest maps. Weights come from:

* ``None``: random initialisation;
* a Zoobot hub name (``hf_hub:mwalmsley/zoobot-encoder-convnext_nano``, or ``zoobot`` for the one matching the
  backbone): the real path through timm ``pretrained=True`` (huggingface_hub, its cache and its offline mode
  ``HF_HUB_OFFLINE=1``); checked first so that an offline machine fails at once with advice instead of
  retrying for ~25 s;
* a local file: ``.safetensors`` (Zoobot/timm/Hugging Face), ``.pth``/``.pt``/``.bin`` (a state dict) or a
  Lightning ``.ckpt`` (Zoobot finetuned model: the ``encoder.*`` tensors are used). Files are read with
  ``safetensors`` or ``torch.load(weights_only=True)``: no untrusted code is unpickled;
* ``imagenet`` for ``torchvision_resnet50`` (torchvision's ResNet50_Weights, needs the torch hub cache offline).

Trainable stages follow torchvision's ``trainable_layers`` convention (``resnet_fpn_backbone``): k in 0..4
trains only the last k of the 4 stages and freezes everything before them (stem included); None trains
everything (torchvision's 5).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import HfHubHTTPError
from safetensors.torch import load_file
from timm.layers import freeze_batch_norm_2d
from timm.models import adapt_input_conv
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock
from torchvision.ops.misc import FrozenBatchNorm2d

from clumptool.common.errors import ClumptoolError
from clumptool.detection.spec import weights_name

# clumptool name -> timm architecture (the Zoobot encoders are timm models)
TIMM_BACKBONES = {
    "convnext_pico": "convnext_pico",
    "convnext_nano": "convnext_nano",
    "convnext_tiny": "convnext_tiny",
    "convnext_small": "convnext_small",
    "convnext_base": "convnext_base",
    "efficientnet_b0": "efficientnet_b0",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "maxvit_tiny": "maxvit_rmlp_tiny_rw_256",
    "maxvit_small": "maxvit_rmlp_small_rw_224",
}
TORCHVISION_BACKBONES = ("torchvision_resnet50",)
BACKBONES = tuple(TIMM_BACKBONES) + TORCHVISION_BACKBONES
STRIDES = (4, 8, 16, 32)
ZOOBOT_HUB = "hf_hub:mwalmsley/zoobot-encoder-{arch}"
STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class FPNBackbone(nn.Module):
    """A timm ``features_only`` encoder + a FeaturePyramidNetwork; ``out_channels`` for FasterRCNN.

    Not torchvision's BackboneWithFPN: that wraps the encoder in IntermediateLayerGetter, which re-runs the
    encoder's child modules in order. timm's feature encoders are feature extractors already (a
    FeatureListNet, or a model-specific class with its own forward such as efficientnet's), so they only
    need the FPN on top. :class:`ResNetFPN` uses BackboneWithFPN where it fits (torchvision's ResNet).
    """

    def __init__(self, body: nn.Module, indices: list[int], in_channels_list: list[int], out_channels: int,
                 stage_prefixes: list[tuple[str, ...]]):
        super().__init__()
        self.body = body
        self.indices = list(indices)
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels)
        self.out_channels = out_channels
        self.stage_prefixes = stage_prefixes  # parameter-name prefixes of the 4 stages, for freezing

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps at strides 4/8/16/32 (before the FPN)."""
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        return [feats[i] for i in self.indices]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.features(x))))


class _NoExtraLevel(ExtraFPNBlock):
    """No pooled 5th level (torchvision's default): clump anchors live on the 4 maps at strides 4-32."""

    def forward(self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str]):
        return results, names


class ResNetFPN(BackboneWithFPN):
    """torchvision's BackboneWithFPN on a ResNet's layer1..layer4 (maps "0".."3"), without the pooled level."""

    def __init__(self, net: nn.Module, fpn_channels: int):
        super().__init__(net, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [256, 512, 1024, 2048],
                         fpn_channels, extra_blocks=_NoExtraLevel())

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps at strides 4/8/16/32 (before the FPN)."""
        return list(self.body(x).values())


def resolve_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ClumptoolError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    return name


def _hub_id(weights: str, backbone: str) -> str | None:
    if weights == "zoobot":
        if backbone not in TIMM_BACKBONES:
            raise ClumptoolError(f"there is no Zoobot encoder for backbone '{backbone}'")
        return ZOOBOT_HUB.format(arch=TIMM_BACKBONES[backbone])
    if weights.startswith("hf_hub:") or weights.startswith("hf-hub:"):
        return "hf_hub:" + weights.split(":", 1)[1]
    return None


HUB_TIMEOUT = 5.0  # seconds for the one request that tells whether the hub answers


def _hub_cached(repo_id: str) -> bool:
    """Are the weights of ``repo_id`` in the Hugging Face cache (HF_HUB_CACHE / HF_HOME)?"""
    return any(isinstance(try_to_load_from_cache(repo_id, fname), str)
               for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))


def _hub_unreachable(repo_id: str) -> str | None:
    """Why the hub cannot serve ``repo_id`` now, or None when it answers.

    huggingface_hub's own offline mode (``HF_HUB_OFFLINE=1``, read when it is imported) means no request at
    all; otherwise one HEAD request with a timeout and no retries (a download retries with back-off for
    ~25 s before failing when there is no network).
    """
    if hf_constants.HF_HUB_OFFLINE:
        return "offline mode is set (HF_HUB_OFFLINE)"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=HUB_TIMEOUT)
    except HfHubHTTPError:
        return None  # the hub answered (e.g. no such repository): timm's own error says what is wrong
    except Exception as exc:  # noqa: BLE001 - connection errors come from several HTTP libraries
        return f"huggingface.co cannot be reached ({type(exc).__name__})"
    return None


def check_hub_weights(hub_name: str) -> None:
    """Fail at once (not after ~25 s of retries) when hub weights are neither cached nor downloadable."""
    repo_id = hub_name.split(":", 1)[1]
    if _hub_cached(repo_id):
        return
    why = _hub_unreachable(repo_id)
    if why:
        raise ClumptoolError(
            f"cannot load weights '{hub_name}': {why} and they are not in the Hugging Face cache. "
            "Download the encoder elsewhere (e.g. model.safetensors from "
            f"https://huggingface.co/{repo_id}) and pass the local file with --weights PATH "
            "(.safetensors, .pth or a Zoobot Lightning .ckpt), or use --weights none for random initialisation."
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, without unpickling code; a Lightning/Zoobot .ckpt yields its encoder.

    Prefixes ``encoder.`` (Zoobot's Lightning modules), ``model.``/``module.`` (wrappers, DDP) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ClumptoolError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix not in STATE_DICT_SUFFIXES:
        raise ClumptoolError(f"{path}: unknown weights format (use one of {', '.join(STATE_DICT_SUFFIXES)})")
    try:
        if suffix == ".safetensors":
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt/unsafe files come in many exception types
        raise ClumptoolError(f"{path}: cannot read weights safely ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ClumptoolError(f"{path}: no state dict (a mapping of parameter names to tensors) found")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("encoder.", "model.encoder.", "module.", "model."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    if not sd:
        raise ClumptoolError(f"{path}: the file holds no tensors")
    return sd


def _check_keys(sd: dict, expected: set[str], source: str, ignore: tuple[str, ...]) -> None:
    """Refuse a weights file that does not fit the encoder (a silent non-strict load would train from noise)."""
    wanted = {k for k in expected if not k.startswith(ignore) and not k.endswith("num_batches_tracked")}
    missing = sorted(wanted - set(sd))
    if missing:
        raise ClumptoolError(
            f"{source}: {len(missing)} of {len(wanted)} encoder tensors missing (e.g. {', '.join(missing[:3])}); "
            "is it a weights file for this backbone?"
        )


def _freeze(module: nn.Module, stage_prefixes: list[tuple[str, ...]], trainable_stages: int | None) -> None:
    """Freeze every parameter before the first of the last ``trainable_stages`` stages.

    torchvision's ``trainable_layers`` rule for ResNets (stem, then layer1..4), by position rather than by
    name: a timm encoder may have modules between its feature stages (efficientnet's blocks.3 and
    blocks.5 lie between the stride-16 and stride-32 maps), and those must train with the stages after them.
    """
    if trainable_stages is None:
        return
    params = list(module.named_parameters())
    if trainable_stages == 0:
        first = len(params)
    else:
        prefixes = stage_prefixes[len(stage_prefixes) - trainable_stages]
        first = next(i for i, (n, _) in enumerate(params) if n.startswith(prefixes))
    for _, p in params[:first]:
        p.requires_grad_(False)


def _timm_backbone(name: str, in_channels: int, weights: str | None, fpn_channels: int,
                   trainable_stages: int | None, image_size: int, frozen_bn: bool) -> FPNBackbone:
    arch = TIMM_BACKBONES[name]
    kwargs: dict = {"features_only": True, "in_chans": in_channels}
    if arch.startswith("maxvit"):
        kwargs["img_size"] = -(-image_size // 32) * 32  # windows must tile the padded input
    pretrained = False
    if weights:
        hub = _hub_id(weights, name)
        if hub:
            check_hub_weights(hub)
            arch, pretrained = hub, True
        else:
            sd = read_state_dict(weights)
            full = timm.create_model(arch, pretrained=False, num_classes=0, **{
                k: v for k, v in kwargs.items() if k != "features_only"})
            _check_keys(sd, set(full.state_dict()), str(weights), ignore=("head.fc", "fc.", "classifier."))
            kwargs["pretrained_cfg_overlay"] = {"state_dict": sd, "source": "timm", "file": None, "hf_hub_id": None,
                                                "url": None}
            pretrained = True
    try:
        body = timm.create_model(arch, pretrained=pretrained, **kwargs)
    except ClumptoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - timm/hub errors
        raise ClumptoolError(f"cannot build backbone '{name}' with weights '{weights}': {exc}") from exc
    reductions = body.feature_info.reduction()
    indices = [reductions.index(s) for s in STRIDES if s in reductions]
    if len(indices) != 4:
        raise ClumptoolError(f"backbone '{name}' has no maps at strides {STRIDES} (has {reductions})")
    channels = [body.feature_info.channels()[i] for i in indices]
    modules = body.feature_info.module_name()
    stage_prefixes = [(modules[i] + ".", modules[i].replace(".", "_") + ".") for i in indices]
    if frozen_bn:
        body = freeze_batch_norm_2d(body)  # small detection batches: keep the pretrained statistics
    _freeze(body, stage_prefixes, trainable_stages)
    return FPNBackbone(body, indices, channels, fpn_channels, stage_prefixes)


def _torchvision_backbone(name: str, in_channels: int, weights: str | None, fpn_channels: int,
                          trainable_stages: int | None, frozen_bn: bool) -> ResNetFPN:
    sd = None
    tv_weights = None
    file = Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file
    fix = f"put {file} in {cached.parent} or pass a local file with --weights PATH"
    if weights == "imagenet":
        tv_weights = ResNet50_Weights.IMAGENET1K_V1
        if not cached.exists() and hf_constants.HF_HUB_OFFLINE:
            raise ClumptoolError(f"cannot download torchvision's ImageNet ResNet-50 weights: offline mode is set "
                                 f"(HF_HUB_OFFLINE) and they are not in {cached.parent}; {fix}")
    elif weights:
        if _hub_id(weights, "resnet50"):
            raise ClumptoolError("torchvision_resnet50 takes --weights imagenet or a local file, not a hub name")
        sd = read_state_dict(weights)
    pretrained = tv_weights is not None or sd is not None
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d  # torchvision's rule for detection backbones
    try:
        net = resnet50(weights=tv_weights, norm_layer=norm)
    except (URLError, OSError) as exc:
        raise ClumptoolError(f"cannot download torchvision's ImageNet ResNet-50 weights ({exc}); {fix}") from exc
    if sd is not None:
        _check_keys(sd, set(net.state_dict()), str(weights), ignore=("fc.",))
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    if in_channels != 3:
        old = net.conv1.weight.detach()
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained:
            src = sd["conv1.weight"] if sd is not None else old
            with torch.no_grad():
                net.conv1.weight.copy_(adapt_input_conv(in_channels, src))
        if sd is not None:
            sd.pop("conv1.weight", None)
    if sd is not None:
        result = net.load_state_dict(sd, strict=False)
        bad = [k for k in result.missing_keys
               if not k.startswith("fc.") and not (k == "conv1.weight" and in_channels != 3)]
        if bad:
            raise ClumptoolError(f"{weights}: tensors missing for {', '.join(bad[:3])}")
    _freeze(net, [(f"layer{i}.",) for i in range(1, 5)], trainable_stages)
    return ResNetFPN(net, fpn_channels)


def build_backbone(name: str, *, in_channels: int = 3, weights: str | os.PathLike | None = None,
                   fpn_channels: int = 128, trainable_stages: int | None = None,
                   image_size: int = 224, frozen_bn: bool | None = None) -> FPNBackbone | ResNetFPN:
    """The encoder ``name`` with ``weights`` (see module doc) and an FPN of ``fpn_channels``.

    ``trainable_stages``: None trains everything; k in 0..4 trains only the last k of the 4 stages
    (0 = frozen encoder, the paper's "pre-trained" regime). ``frozen_bn`` (default: when weights are given)
    keeps batch-norm statistics fixed, as torchvision does for pretrained detection backbones; rebuilding a
    trained model without its initial weights passes it explicitly so the layers match.
    """
    resolve_backbone(name)
    w = weights_name(weights)
    frozen_bn = (w is not None) if frozen_bn is None else frozen_bn
    if name in TORCHVISION_BACKBONES:
        return _torchvision_backbone(name, in_channels, w, fpn_channels, trainable_stages, frozen_bn)
    if w == "imagenet":
        raise ClumptoolError("--weights imagenet is for torchvision_resnet50; Zoobot encoders take 'zoobot', "
                             "a hub name or a local file")
    return _timm_backbone(name, in_channels, w, fpn_channels, trainable_stages, image_size, frozen_bn)
