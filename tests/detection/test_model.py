"""Backbones build and train; weights load from local files exactly; hub names fail fast offline;
specs are never changed in place; thresholds and MC dropout apply per call."""

from __future__ import annotations

import dataclasses
import time

import pytest
import timm
import torch

from clumptool.common.errors import ClumptoolError
from clumptool.detection.backbones import build_backbone, read_state_dict
from clumptool.detection.io import load_model, save_model, write_model
from clumptool.detection.model import build_model, detect, has_dropout
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
    # huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE when imported: set its constants (a subprocess with
    # the environment variables is tested in test_zoobot.py)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
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
    before = dataclasses.asdict(spec)
    saved = write_model(tmp_path / "m", model, spec)
    assert dataclasses.asdict(spec) == before and spec.weights_sha256 is None  # the spec passed in is unchanged
    assert (tmp_path / "m" / "model.json").exists()
    loaded, spec2 = load_model(tmp_path / "m")
    assert spec2 == saved and not loaded.training
    assert dataclasses.replace(saved, settings_sha256=None, weights_sha256=None, version=spec.version) == spec
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

    spec = dataclasses.replace(make_spec("resnet18", image_size=64, crop=48), score_threshold=0.35)
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
    with pytest.raises(ClumptoolError, match="--anchor-sizes 8,16: needs 4 positive sizes"):
        make_spec(anchor_sizes=[8, 16])
    (tmp_path / "m.json").write_text('{"backbone": "resnet18", "colour": 1}')
    with pytest.raises(ClumptoolError, match="unknown field"):
        ModelSpec.from_json(tmp_path / "m.json")


def test_specs_are_never_changed_in_place(tmp_path, resnet18_encoder):
    """build_model and the weights provenance: a new spec, the one passed in untouched (and frozen)."""
    from safetensors.torch import save_file

    save_file(resnet18_encoder, str(tmp_path / "enc.safetensors"))
    spec = make_spec("resnet18", image_size=64, crop=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.image_size = 32
    model = build_model(spec, weights=tmp_path / "enc.safetensors")
    assert spec.init_weights is None  # build_model records nothing in the spec
    assert type(model.backbone.body.bn1).__name__.startswith("Frozen")
    recorded = spec.with_init_weights(tmp_path / "enc.safetensors")
    assert recorded.init_weights == str(tmp_path / "enc.safetensors") and spec.init_weights is None
    assert spec.with_init_weights("none") is spec and spec.with_init_weights(None) is spec
    # a spec that records the weights rebuilds the same layers without them (as a checkpoint does)
    rebuilt = build_model(recorded)
    assert set(rebuilt.state_dict()) == set(model.state_dict())


def test_detect_threshold_and_mc_dropout_per_call():
    """detect(): the threshold and MC dropout apply to one call; the shared model is left as it was."""
    torch.manual_seed(3)
    spec = make_spec("resnet18", image_size=64, crop=None, box_dropout=0.5, box_score_thresh=0.0)
    model = build_model(spec).eval()
    x = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    with torch.no_grad():
        plain = model(x)
    same = detect(model, x)
    for a, b in zip(plain, same, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])
    t = float(plain[0]["scores"].median())
    high = detect(model, x, score_thresh=t)
    assert model.roi_heads.score_thresh == 0.0  # not switched on the shared model
    assert len(high[0]["scores"]) and (high[0]["scores"] > t).all()  # torchvision keeps scores > threshold
    assert len(high[0]["scores"]) < len(plain[0]["scores"])
    # the boxes above t are exactly the model's own boxes above t (the same NMS, the same top-k)
    keep = plain[0]["scores"] > t
    assert torch.equal(high[0]["boxes"], plain[0]["boxes"][keep])
    # MC dropout: passes differ, the modules stay in eval mode, the next plain call is deterministic again
    assert has_dropout(model)
    torch.manual_seed(4)
    mc1 = detect(model, x, mc_dropout=True)[0]["scores"]
    mc2 = detect(model, x, mc_dropout=True)[0]["scores"]
    assert not (len(mc1) == len(mc2) and torch.equal(mc1, mc2))
    assert not any(m.training for m in model.modules())
    assert torch.equal(detect(model, x)[0]["scores"], plain[0]["scores"])
    assert not has_dropout(build_model(make_spec("resnet18", image_size=64, crop=None)))
    with pytest.raises(ValueError, match="eval mode"):
        detect(model.train(), x)


@pytest.mark.parametrize("trainable", [None, 0, 2, 4])
def test_resnet50_is_torchvisions_backbone_with_fpn(trainable):
    """torchvision_resnet50: torchvision's BackboneWithFPN, frozen by its trainable_layers rule (None = 5)."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone

    ours = build_backbone("torchvision_resnet50", trainable_stages=trainable, fpn_channels=32)
    assert isinstance(ours, BackboneWithFPN)
    ref = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5 if trainable is None
                              else trainable, norm_layer=torch.nn.BatchNorm2d)
    grads = {n: p.requires_grad for n, p in ours.body.named_parameters()}
    assert grads == {n: p.requires_grad for n, p in ref.body.named_parameters()}
    out = ours(torch.rand(1, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3"] and out["0"].shape[-1] == 16  # strides 4..32, no pooled level
    assert [f.shape[1] for f in ours.features(torch.rand(1, 3, 64, 64))] == [256, 512, 1024, 2048]


def test_resnet50_local_weights_with_five_channels(tmp_path):
    """A 3-channel ResNet-50 state dict on a 5-channel input: conv1 adapted (timm's rule), the rest exact."""
    from torchvision.models import resnet50

    torch.manual_seed(5)
    sd = resnet50().state_dict()
    torch.save(sd, tmp_path / "r50.pth")
    bb = build_backbone("torchvision_resnet50", in_channels=5, weights=tmp_path / "r50.pth", fpn_channels=32)
    assert bb.body.conv1.weight.shape[1] == 5
    assert torch.equal(bb.body.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
    assert torch.equal(bb.body.bn1.running_var, sd["bn1.running_var"])
