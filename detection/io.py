"""Saving and loading trained detectors: ``model.safetensors`` (tensors only) + ``model.json`` (ModelSpec).

Nothing is unpickled on load: safetensors for the model folder, ``torch.load(weights_only=True)`` for
Lightning checkpoints. ``load_model`` accepts the folder written by ``clumptool train``, the weights file in
it, or one of its Lightning checkpoints (the spec is read from ``model.json`` beside or above the checkpoint,
or from the checkpoint's hyper-parameters).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError
from clumptool.detection.spec import ModelSpec

WEIGHTS_NAME = "model.safetensors"
SPEC_NAME = "model.json"


def save_model(out_dir: str | os.PathLike, model: nn.Module, spec: ModelSpec) -> Path:
    """Write weights and spec atomically into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"version": spec.version, "backbone": spec.backbone})
    spec.to_json(out / SPEC_NAME)
    return out


def _lightning_state(path: Path) -> tuple[dict, ModelSpec | None]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ClumptoolError(f"{path}: cannot read checkpoint safely ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ClumptoolError(f"{path}: not a Lightning checkpoint (no state_dict)")
    sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    hp = ckpt.get("hyper_parameters") or {}
    spec = ModelSpec.from_dict(hp["spec"], source=str(path)) if isinstance(hp.get("spec"), dict) else None
    return sd, spec


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """State dict and spec of a saved detector (folder, weights file or Lightning checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise ClumptoolError(f"{path}: model not found (pass the folder written by 'clumptool train')")
    if path.is_dir():
        if not (path / WEIGHTS_NAME).exists():
            raise ClumptoolError(f"{path}: no {WEIGHTS_NAME} in this folder (is it a 'clumptool train' output?)")
        path = path / WEIGHTS_NAME
    spec = None
    if path.suffix == ".ckpt":
        sd, spec = _lightning_state(path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ClumptoolError(f"{path}: cannot read weights ({exc})") from exc
    else:
        raise ClumptoolError(f"{path}: expected a model folder, {WEIGHTS_NAME} or a Lightning .ckpt")
    for cand in (path.parent / SPEC_NAME, path.parent.parent / SPEC_NAME):
        if cand.exists():
            spec = ModelSpec.from_json(cand)
            break
    if spec is None:
        raise ClumptoolError(f"{path}: no {SPEC_NAME} beside it (needed to rebuild the model)")
    return sd, spec


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a trained detector in eval mode on ``device``."""
    from clumptool.detection.model import build_model

    sd, spec = read_weights(path)
    model = build_model(spec)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ClumptoolError(f"{path}: weights do not fit the model described by {SPEC_NAME} ({exc})") from exc
    return model.to(device).eval(), spec
