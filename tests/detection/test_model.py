"""Backbones build and train; weights load from local files exactly; hub names fail fast offline."""

from __future__ import annotations

import time

import pytest
import timm
import torch

from clumptool.common.errors import ClumptoolError
from clumptool.detection.backbones import build_backbone, read_state_dict
from clumptool.detection.io import load_model, save_model
from clumptool.detection.model import build_model
from clumptool.detection.spec import ModelSpec, make_spec


def _target():
    return [{"boxes": torch.tensor([[10.0, 12.0, 26.0, 28.0]]), "labels": torch.tensor([1])}]


@pytest.mark.parametrize("backbone", ["convnext_nano", "resnet18", "efficientnet_b0", "torchvision_resnet50"])
def test_each_family_trains_and_detects(backbone):
    torch.manual_seed(0)
    model = build_model(make_spec(backbone, image_size=64, crop=None))
    model.train()
    losses = model([torch.rand(3, 64, 64)], _target())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    loss.backward()
    grads = [p.grad for p in model.backbone.body.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:3])
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 50
    # no upscaling to torchvision's COCO 800 px
    assert model.transform.min_size == (64,) and model.transform.max_size == 64


def test_tuned_settings_and_normalisation():
    spec = make_spec("convnext_nano", image_size=64)
    assert spec.mean == [0, 0, 0] and spec.std == [1, 1, 1]   # Zoobot: [0, 1] without normalisation
    tv = make_spec("torchvision_resnet50", image_size=64)
    assert tv.mean == pytest.approx([0.485, 0.456, 0.406])
    model = build_model(make_spec("convnext_nano", image_size=64, crop=64))
    sizes = model.rpn.anchor_generator.sizes
    assert [s[0] for s in sizes] == [8, 16, 32, 64] and sizes[0][1] == pytest.approx(11.28)
    assert model.rpn.anchor_generator.aspect_ratios == ((1.0,),) * 4  # square clumps
    assert model.rpn.proposal_matcher.high_threshold == 0.6
    # anchors follow the working scale: 8..64 original px on a 200 px crop seen at 128 px
    assert make_spec(image_size=128, crop=200).anchor_sizes == [5, 10, 20, 41]
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.rpn._pre_nms_top_n == {"training": 600, "testing": 300}


def test_n_channels_and_freezing():
    spec = make_spec("resnet18", image_size=64, in_channels=5, trainable_stages=1)
    assert spec.mean == [0.0] * 5
    model = build_model(spec)
    model.train()
    loss = sum(model([torch.rand(5, 64, 64)], _target()).values())
    loss.backward()
    body = model.backbone.body
    assert not body.conv1.weight.requires_grad and not body.layer3[0].conv1.weight.requires_grad
    assert body.layer4[0].conv1.weight.requires_grad
    frozen = build_model(make_spec("convnext_nano", image_size=64, trainable_stages=0))
    assert not any(p.requires_grad for p in frozen.backbone.body.parameters())
    assert all(p.requires_grad for p in frozen.backbone.fpn.parameters())


@pytest.fixture(scope="module")
def resnet18_encoder():
    torch.manual_seed(1)
    enc = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with torch.no_grad():
        enc.bn1.running_mean.uniform_(-1, 1)  # a buffer that must travel too
    return {k: v.clone() for k, v in enc.state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "ckpt"])
def test_local_weights_load_exactly(tmp_path, resnet18_encoder, fmt):
    sd = resnet18_encoder
    path = tmp_path / f"enc.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    elif fmt == "pth":
        torch.save(sd, path)
    else:  # a Zoobot-style Lightning checkpoint: encoder.* plus a head and other entries
        state = {f"encoder.{k}": v for k, v in sd.items()}
        state["head.weight"] = torch.zeros(2, 512)
        torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 1e-3}}, path)
    assert set(read_state_dict(path)) >= {"conv1.weight", "layer4.1.bn2.running_var"}
    bb = build_backbone("resnet18", weights=path)
    body = bb.body
    assert torch.equal(body.conv1.weight, sd["conv1.weight"])
    assert torch.equal(body.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert torch.equal(body.bn1.running_mean, sd["bn1.running_mean"])
    assert type(body.bn1).__name__.startswith("Frozen")  # pretrained statistics kept fixed


def test_convnext_safetensors_and_wrong_file(tmp_path, resnet18_encoder):
    from safetensors.torch import save_file

    enc = timm.create_model("convnext_nano", pretrained=False, num_classes=0)
    sd = enc.state_dict()
    save_file(sd, str(tmp_path / "cn.safetensors"))
    bb = build_backbone("convnext_nano", weights=tmp_path / "cn.safetensors")
    assert torch.equal(bb.body.stem_0.weight, sd["stem.0.weight"])
    assert torch.equal(bb.body.stages_3.blocks[1].mlp.fc2.weight, sd["stages.3.blocks.1.mlp.fc2.weight"])
    save_file(resnet18_encoder, str(tmp_path / "r18.safetensors"))
    with pytest.raises(ClumptoolError, match="missing"):
        build_backbone("convnext_nano", weights=tmp_path / "r18.safetensors")


def test_bad_backbone_and_files(tmp_path):
    with pytest.raises(ClumptoolError, match="unknown backbone"):
        build_backbone("vgg_huge")
    with pytest.raises(ClumptoolError, match="not found"):
        build_backbone("resnet18", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ClumptoolError, match="cannot read"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")


def test_hub_name_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    t0 = time.monotonic()
    with pytest.raises(ClumptoolError, match="--weights PATH"):
        build_backbone("convnext_nano", weights="hf_hub:mwalmsley/zoobot-encoder-convnext_nano")
    with pytest.raises(ClumptoolError, match="zoobot-encoder-resnet18"):
        build_backbone("resnet18", weights="zoobot")
    assert time.monotonic() - t0 < 5


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(2)
    spec = make_spec("resnet18", image_size=64, crop=48, box_dropout=0.3)
    model = build_model(spec).eval()
    save_model(tmp_path / "m", model, spec)
    assert (tmp_path / "m" / "model.json").exists()
    loaded, spec2 = load_model(tmp_path / "m")
    assert spec2 == spec and not loaded.training
    x = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key])
    with pytest.raises(ClumptoolError, match="model not found"):
        load_model(tmp_path / "missing")


def test_model_json_ties_settings_and_weights(tmp_path):
    """model.json records both digests and derives its version from them; any hand edit is caught on load."""
    import json

    from clumptool.common.outputs import file_digest
    from clumptool.detection.spec import settings_digest, tied_version, version_stamp

    spec = make_spec("resnet18", image_size=64, crop=48)
    spec.score_threshold = 0.35
    save_model(tmp_path / "m", build_model(spec), spec)
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["weights_sha256"] == file_digest(tmp_path / "m" / "model.safetensors")
    assert saved["settings_sha256"] == settings_digest(ModelSpec.from_dict(saved).settings())
    assert saved["version"] == tied_version(version_stamp(saved["version"]), saved["settings_sha256"],
                                            saved["weights_sha256"])
    assert load_model(tmp_path / "m")[1].score_threshold == 0.35
    for field, value in (("score_threshold", 0.9), ("crop", 64), ("mean", [0.1, 0.1, 0.1])):
        (tmp_path / "m" / "model.json").write_text(json.dumps({**saved, field: value}))
        with pytest.raises(ClumptoolError, match=f"edited after training .*{field}"):
            load_model(tmp_path / "m")


def test_spec_validation(tmp_path):
    with pytest.raises(ClumptoolError, match="mean/std"):
        ModelSpec(in_channels=1)
    with pytest.raises(ClumptoolError, match="anchor_sizes"):
        make_spec(anchor_sizes=[8, 16])
    (tmp_path / "m.json").write_text('{"backbone": "resnet18", "colour": 1}')
    with pytest.raises(ClumptoolError, match="unknown field"):
        ModelSpec.from_json(tmp_path / "m.json")
