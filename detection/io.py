"""Saving and loading trained detectors: ``model.safetensors`` (tensors only) + ``model.json`` (ModelSpec).

Nothing is unpickled on load: safetensors for the model folder, ``torch.load(weights_only=True)`` for
Lightning checkpoints. ``load_model`` accepts the folder written by ``clumptool train``, the weights file in
it, or one of its Lightning checkpoints (the spec is read from ``model.json`` beside or above the checkpoint,
or from the checkpoint's hyper-parameters).

A model is its weights and its settings together: ``model.json`` records a SHA-256 digest of the weights file
and of its settings, and its ``version`` is derived from both; the weights file carries a copy of the
settings. Loading checks all three, so weights from another run, or an ``image_size`` edited by hand, are
refused with the fields that changed instead of quietly producing a different catalogue under the same
version. Model folders written before the digests existed still load, with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from clumptool.common.atomic import atomic_path
from clumptool.common.errors import ClumptoolError
from clumptool.common.outputs import file_digest
from clumptool.detection.model import build_model
from clumptool.detection.spec import ModelSpec, settings_digest, tied_version, version_stamp

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
SPEC_NAME = "model.json"


def save_model(out_dir: str | os.PathLike, model: nn.Module, spec: ModelSpec) -> Path:
    """Write weights and spec atomically into ``out_dir``; returns the folder (see :func:`write_model`)."""
    write_model(out_dir, model, spec)
    return Path(out_dir)


def write_model(out_dir: str | os.PathLike, model: nn.Module, spec: ModelSpec) -> ModelSpec:
    """Write weights and spec atomically into ``out_dir``; returns the spec as written to model.json.

    That spec is ``spec`` plus the digests of its settings and of the weights file, and a ``version``
    derived from both (``spec`` itself is not changed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = spec.settings()
    s_digest = settings_digest(settings)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"backbone": spec.backbone, "settings_sha256": s_digest,
                                             "settings": json.dumps(settings, sort_keys=True)})
    w_digest = file_digest(out / WEIGHTS_NAME)
    saved = dataclasses.replace(spec, settings_sha256=s_digest, weights_sha256=w_digest,
                                version=tied_version(version_stamp(spec.version), s_digest, w_digest))
    saved.to_json(out / SPEC_NAME)
    return saved


def _weights_settings(weights: Path) -> dict | None:
    """The settings copy stored in a weights file's metadata (None if absent or unreadable)."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            meta = fh.metadata() or {}
        return json.loads(meta["settings"]) if "settings" in meta else None
    except Exception:  # noqa: BLE001 - only used to explain a mismatch
        return None


def _edited_fields(recorded: dict | None, current: dict) -> str:
    if recorded is None:
        return "settings digest differs"
    changed = [f"{k} {recorded.get(k)!r} -> {current.get(k)!r}"
               for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    return "; ".join(changed) or "settings digest differs"


def verify_model(spec: ModelSpec, spec_path: Path, weights: Path | None) -> None:
    """Raise ClumptoolError unless ``spec`` (read from ``spec_path``) and the weights file belong together.

    ``weights`` is the model.safetensors to check (None for a Lightning checkpoint: only the settings are
    checked). Specs without digests (older clumptool) are accepted with a warning.
    """
    fix = "retrain, or restore the model folder as 'clumptool train' wrote it"
    if spec.settings_sha256 is None and spec.weights_sha256 is None:
        log.warning("%s: written by an older clumptool without digests; cannot check that the weights and "
                    "settings belong together (retrain to add them)", spec_path)
        return
    current = spec.settings()
    if settings_digest(current) != spec.settings_sha256:
        recorded = _weights_settings(weights) if weights is not None else None
        raise ClumptoolError(f"{spec_path}: model.json was edited after training "
                             f"({_edited_fields(recorded, current)}); {fix}")
    if weights is not None:
        digest = file_digest(weights)
        if digest != spec.weights_sha256:
            raise ClumptoolError(
                f"{weights}: these weights are not the ones {spec_path} was written with (weights digest "
                f"{digest[:12]}..., model.json records {str(spec.weights_sha256)[:12]}...): the folder mixes two "
                f"runs; {fix}")
    if spec.weights_sha256 is None or spec.version != tied_version(
            version_stamp(spec.version), spec.settings_sha256, spec.weights_sha256):
        raise ClumptoolError(f"{spec_path}: field 'version' ({spec.version}) does not belong to these settings and "
                             f"weights (model.json was edited after training); {fix}")


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
    """State dict and spec of a saved detector (folder, weights file or Lightning checkpoint).

    Raises ClumptoolError when model.json and the weights do not belong together (see :func:`verify_model`).
    """
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
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ClumptoolError(f"{path}: cannot read weights ({exc})") from exc
    else:
        raise ClumptoolError(f"{path}: expected a model folder, {WEIGHTS_NAME} or a Lightning .ckpt")
    for cand in (path.parent / SPEC_NAME, path.parent.parent / SPEC_NAME):
        if cand.exists():
            spec = ModelSpec.from_json(cand)
            verify_model(spec, cand, path if path.suffix == ".safetensors" else None)
            break
    if spec is None:
        raise ClumptoolError(f"{path}: no {SPEC_NAME} beside it (needed to rebuild the model)")
    return sd, spec


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a trained detector in eval mode on ``device``."""
    sd, spec = read_weights(path)
    model = build_model(spec)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ClumptoolError(f"{path}: weights do not fit the model described by {SPEC_NAME} ({exc})") from exc
    return model.to(device).eval(), spec
