"""evaluate / predict: truth tables, post-processing, and both commands end to end on a tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from clumptool.common.errors import ClumptoolError
from clumptool.detection.evaluate import read_truth, restrict_to_region, truth_from_frame
from clumptool.detection.postprocess import keep_indices

# ----------------------------------------------------------------------------------------- truth tables


def test_point_truth_becomes_squares_of_2_5_fwhm(tmp_path):
    df = pd.DataFrame({"subject_id": [7, 7, 8], "x": [10.0, 30.0, 5.0], "y": [12.0, 40.0, 5.0], "label": [1, 2, 1],
                       "fwhm_px": [4.0, 4.0, 6.0]})
    df.to_csv(tmp_path / "truth.csv", index=False)
    t = read_truth(tmp_path / "truth.csv")
    assert t.kind == "points"
    np.testing.assert_allclose(t.boxes["7"], [[5, 7, 15, 17], [25, 35, 35, 45]])
    np.testing.assert_allclose(t.boxes["8"], [[-2.5, -2.5, 12.5, 12.5]])
    assert t.labels["7"].tolist() == [1, 2]
    boxes, labels = t.get("unknown")
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_boxes_truth_as_given_and_default_label():
    t = truth_from_frame(pd.DataFrame({"subject_id": ["a"], "x1": [1.0], "y1": [2.0], "x2": [11.0], "y2": [12.0]}))
    assert t.kind == "boxes" and t.labels["a"].tolist() == [1] and "no label column" in t.note
    np.testing.assert_allclose(t.boxes["a"], [[1, 2, 11, 12]])


def test_point_truth_without_fwhm_uses_the_default_box_size():
    t = truth_from_frame(pd.DataFrame({"subject_id": [1], "x": [20.0], "y": [20.0], "label": [1]}))
    side = t.boxes["1"][0, 2] - t.boxes["1"][0, 0]
    assert side == pytest.approx(16.6)


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"subject_id": [1], "x": [1.0]}), "x, y"),
    (pd.DataFrame({"x": [1.0], "y": [1.0]}), "subject_id"),
    (pd.DataFrame({"subject_id": [1, 2], "x": [1.0, "oops"], "y": [1.0, 2.0]}), "row 3, field 'x'"),
    (pd.DataFrame({"subject_id": [1], "x": [1.0], "y": [1.0], "label": [0]}), "row 2, field 'label'"),
    (pd.DataFrame({"subject_id": [1], "x1": [5.0], "y1": [1.0], "x2": [4.0], "y2": [9.0]}), "x2 <= x1"),
])
def test_bad_truth_tables_are_rejected_with_the_row_and_field(frame, message):
    with pytest.raises(ClumptoolError, match=message):
        truth_from_frame(frame, "truth.csv")


def test_truth_outside_the_model_region_is_left_out_and_edges_clipped():
    boxes = np.array([[95, 95, 105, 105], [44, 95, 54, 105], [40, 40, 52, 52]], dtype=float)
    kept, labels, sides = restrict_to_region(boxes, np.array([1, 2, 1]), (50.0, 50.0, 150.0, 150.0))
    np.testing.assert_allclose(kept, [[95, 95, 105, 105]])  # centres (49, 100), (46, 46) are outside
    assert labels.tolist() == [1] and sides.tolist() == [10.0]
    kept, _, sides = restrict_to_region(np.array([[44, 95, 56, 105]], dtype=float), np.array([1]),
                                        (50, 50, 150, 150))
    np.testing.assert_allclose(kept, [[50, 95, 56, 105]])
    assert sides.tolist() == [12.0]  # the matching radius keeps the clump's full FWHM at the edge


# ----------------------------------------------------------------------------------------- post-processing


def test_class_agnostic_nms_drop_central_and_min_score():
    boxes = np.array([[10, 10, 20, 20], [11, 10, 21, 20], [45, 45, 55, 55], [70, 70, 80, 80]], dtype=float)
    scores = np.array([0.6, 0.9, 0.8, 0.3])
    # boxes 0 and 1 overlap with IoU 0.82: NMS keeps the higher score whatever the classes
    assert keep_indices(boxes, scores, 100, 100, nms_iou=0.2).tolist() == [1, 2, 3]
    assert keep_indices(boxes, scores, 100, 100, nms_iou=None).tolist() == [1, 2, 0, 3]
    assert keep_indices(boxes, scores, 100, 100, nms_iou=0.2, drop_central=5).tolist() == [1, 3]
    assert keep_indices(boxes, scores, 100, 100, nms_iou=0.2, min_score=0.5).tolist() == [1, 2]
    assert keep_indices(np.zeros((0, 4)), np.zeros(0), 100, 100).tolist() == []


# ----------------------------------------------------------------------------------------- end to end

SIZE, CROP = 80, 64  # 80 px images, the model sees the central 64 px: original = working + 8
OFFSET = (SIZE - CROP) // 2
SUBJECTS = ["101", "102", "103", "104"]  # 104 has no clumps


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Four 80 px PNGs, a point truth (simulate's truth.csv columns) and a Zooniverse subjects export."""
    from PIL import Image

    root = tmp_path_factory.mktemp("project")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for sid in SUBJECTS:
        arr = (rng.uniform(0, 60, size=(SIZE, SIZE, 3))).astype(np.uint8)
        Image.fromarray(arr).save(root / "images" / f"{sid}.png")
    rows = []
    for sid in SUBJECTS[:3]:
        rows += [(sid, 30.0, 40.0, 1), (sid, 50.0, 20.0, 2), (sid, 4.0, 4.0, 1)]  # (4, 4) is outside the crop
    truth = pd.DataFrame(rows, columns=["subject_id", "x", "y", "label"]).assign(fwhm_px=4.0)
    truth.to_csv(root / "truth.csv", index=False)
    meta = [json.dumps({"ra": 150.0 + k, "dec": 2.0, "#arcsecPerSide": 32.0, "#fwhmImagePix": 4.0})
            for k in range(len(SUBJECTS))]
    pd.DataFrame({"subject_id": [int(s) for s in SUBJECTS], "metadata": meta}).to_csv(root / "subjects.csv",
                                                                                    index=False)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-init resnet18 detector on 64 px crops whose classifier is biased to report clumps."""
    import torch

    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec

    torch.manual_seed(0)
    spec = make_spec("resnet18", image_size=CROP, crop=CROP, fpn_channels=32, representation_size=64)
    model = build_model(spec)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0, 1.0]))
    return save_model(tmp_path_factory.mktemp("model") / "model", model, spec)


class OracleHeads:
    """The box heads of the oracle: the same boxes (working pixels) for every image, at or above the call's
    score threshold (``detect`` sets it on its own shallow copy of the heads)."""

    def __init__(self):
        import torch

        working = lambda x, y: [x - OFFSET - 5, y - OFFSET - 5, x - OFFSET + 5, y - OFFSET + 5]  # noqa: E731
        self.boxes = torch.tensor([working(30, 40), working(50, 20), working(20, 60)], dtype=torch.float32)
        self.scores = torch.tensor([0.9, 0.8, 0.3])
        self.labels = torch.tensor([1, 2, 1])
        self.score_thresh = 0.05

    def __call__(self, features, proposals, image_sizes):
        keep = self.scores >= self.score_thresh
        return [{"boxes": self.boxes[keep], "scores": self.scores[keep], "labels": self.labels[keep]}
                for _ in image_sizes], {}


class OracleTransform:
    def __call__(self, images):
        return SimpleNamespace(tensors=None, image_sizes=[tuple(im.shape[-2:]) for im in images]), None

    def postprocess(self, detections, image_sizes, original_sizes):
        return detections


class OracleModel(torch.nn.Module):
    """Stands in for a detector in ``detect``: the oracle's heads, no backbone or RPN."""

    def __init__(self):
        super().__init__()
        self.param = torch.nn.Parameter(torch.zeros(1))
        self.roi_heads, self.transform = OracleHeads(), OracleTransform()
        self.backbone = lambda tensors: None
        self.rpn = lambda batch, features: (None, None)


def test_evaluate_known_answer_with_an_oracle_model(project, tiny_model, tmp_path, monkeypatch):
    from clumptool.detection import evaluate, io
    from clumptool.detection.evaluate import evaluate_model

    _, spec = io.read_weights(tiny_model)
    monkeypatch.setattr(evaluate, "load_model", lambda path, device="cpu": (OracleModel(), spec))
    rep = evaluate_model(tiny_model, project / "truth.csv", project / "images", tmp_path / "eval", progress=False)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (tmp_path / "eval" / "pr_curve.png").stat().st_size > 1000
    assert m["truth"]["n_true_in_region"] == 6 and m["truth"]["n_true_outside_region"] == 3
    # 6 true clumps in 3 galaxies; every galaxy (also the empty 104) gets 2 good boxes + 1 false one at 0.3
    best = m["scopes"]["overall"]["best_f1"]
    assert best["threshold"] == pytest.approx(0.8)
    assert (best["n_true"], best["n_det"], best["n_matched"]) == (6, 8, 6)
    assert best["completeness"] == 1.0 and best["purity"] == pytest.approx(0.75)
    at_low = rep.evaluation.curves["overall"].at(0.3)
    assert (at_low["n_det"], at_low["n_matched"]) == (12, 6)
    assert m["scopes"]["odd_clump"]["at_threshold"]["completeness"] == 1.0
    assert m["scopes"]["odd_clump"]["at_threshold"]["purity"] == pytest.approx(0.75)
    assert set(m["map"]["per_class"]) >= {"map", "map_50"} and set(m["map"]["class_agnostic"]) >= {"map", "map_50"}
    table = rep.format_table()
    assert "overall" in table and "0.750" in table and "0.857" in table  # purity and F1 at the best threshold


def test_map_is_one_with_a_perfect_oracle(project, tiny_model, tmp_path, monkeypatch):
    from clumptool.detection import evaluate, io
    from clumptool.detection.evaluate import evaluate_model

    _, spec = io.read_weights(tiny_model)
    oracle = OracleModel()
    heads = oracle.roi_heads
    heads.boxes, heads.scores, heads.labels = heads.boxes[:2], heads.scores[:2], heads.labels[:2]
    monkeypatch.setattr(evaluate, "load_model", lambda path, device="cpu": (oracle, spec))
    truth = pd.read_csv(project / "truth.csv")
    truth = pd.concat([truth, truth[truth.subject_id == 101].assign(subject_id=104)])
    truth.to_csv(tmp_path / "truth_all.csv", index=False)
    rep = evaluate_model(tiny_model, tmp_path / "truth_all.csv", project / "images", tmp_path / "eval",
                         progress=False, settings=None)
    assert rep.metrics["map"]["per_class"]["map_50"] == pytest.approx(1.0)
    assert rep.metrics["map"]["per_class"]["map"] == pytest.approx(1.0)
    assert rep.metrics["scopes"]["overall"]["best_f1"]["f1"] == 1.0


def test_evaluate_and_predict_cli_on_a_tiny_model(project, tiny_model, tmp_path):
    from click.testing import CliRunner

    from clumptool.aggregation.machine import read_detections
    from clumptool.cli import main
    from clumptool.common.wcs import sky_to_pixel
    from clumptool.detection.catalogue import CATALOGUE_COLUMNS

    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--model", str(tiny_model), "--boxes", str(project / "truth.csv"),
                               "--images", str(project / "images"), "--out", str(tmp_path / "eval"),
                               "--subjects", str(project / "subjects.csv"), "--match", "iou", "--iou", "0.3"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(m["scopes"]) == {"overall", "clump", "odd_clump"} and m["images"]["n_images"] == 4
    assert m["settings"]["method"] == "iou" and m["settings"]["iou_thresh"] == 0.3
    assert "mAP@0.5" in res.output and (tmp_path / "eval" / "pr_curve.png").exists()

    out = tmp_path / "cat" / "catalogue.parquet"
    res = runner.invoke(main, ["predict", "--model", str(tiny_model), "--images", str(project / "images"),
                               "--subjects", str(project / "subjects.csv"), "--score-threshold", "0.5",
                               "--out", str(out)])
    assert res.exit_code == 0, res.output
    cat = pd.read_parquet(out)
    assert tuple(cat.columns) == CATALOGUE_COLUMNS
    assert len(cat) > 0 and f"{len(cat)} clumps in 4 galaxies" in res.output
    assert (cat["clump_score"] >= 0.5).all() and cat["clump_id"].tolist() == list(range(len(cat)))
    assert cat["clump_label_name"].isin(["clump", "odd_clump"]).all()
    # boxes lie in the part of the image the model sees
    assert (cat["clump_px_x1"] >= OFFSET - 1e-6).all() and (cat["clump_px_x2"] <= OFFSET + CROP + 1e-6).all()
    for _, r in cat.iterrows():
        x, y = sky_to_pixel(np.array([r.clump_centre_ra]), np.array([r.clump_centre_dec]), r.galaxy_ra, r.galaxy_dec,
                            32.0 / SIZE, SIZE, SIZE)
        assert abs(x[0] - r.clump_centre_px_x) < 1e-6 and abs(y[0] - r.clump_centre_px_y) < 1e-6
    assert set(cat["galaxy_ra"]) <= {150.0, 151.0, 152.0, 153.0}
    assert (out.parent / "predictions.png").stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["catalogue.parquet", "galaxies.parquet", "manifest.json",
                                                            "predictions.png"]
    # every galaxy looked at, the ones without a detection too (aggregate --detections: where silence counts)
    looked_at = sorted(pd.read_parquet(out.parent / "galaxies.parquet")["subject_id"])
    assert looked_at == sorted(p.stem for p in (project / "images").glob("*.png")) and len(looked_at) == 4
    meta = json.loads(pq.read_schema(out).metadata[b"clumptool"])
    assert meta["score_threshold"] == 0.5 and meta["score_threshold_source"] == "--score-threshold"
    # the field the model saw goes with the catalogue, for aggregate --detections (aggregation/machine.py)
    assert meta["crop"] == CROP and read_detections(out).field.crop == CROP
    assert set(cat["model_version"]) == {meta["model_version"]}

    # without subjects: the same detections, sky columns NaN, and a note says so
    res = runner.invoke(main, ["predict", "--model", str(tiny_model), "--images", str(project / "images"),
                               "--out", str(tmp_path / "nosky"), "--overlay", "0", "--score-threshold", "0.5"])
    assert res.exit_code == 0, res.output
    nosky = pd.read_parquet(tmp_path / "nosky" / "catalogue.parquet")
    assert "NaN" in res.output and nosky["clump_centre_ra"].isna().all()
    np.testing.assert_allclose(nosky["clump_centre_px_x"], cat["clump_centre_px_x"])


# 2 CPU processes vs 1 (Lightning DDP): tests/detection/test_predict_scale.py


def test_predict_failure_leaves_no_half_written_catalogue(project, tiny_model, tmp_path, monkeypatch):
    from clumptool.detection import predict

    target = tmp_path / "out" / "catalogue.parquet"
    predict.predict_catalogue(tiny_model, project / "images", target, score_threshold=0.9, devices="cpu",
                              progress=False)
    before = {p.name: p.read_bytes() for p in target.parent.iterdir()}
    real_rows = predict.catalogue_rows
    calls = []

    def failing_rows(*args, **kwargs):  # the third galaxy fails, after two were streamed into the file
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(predict, "catalogue_rows", failing_rows)
    with pytest.raises(RuntimeError, match="disk full"):
        predict.predict_catalogue(tiny_model, project / "images", target, score_threshold=0.3, devices="cpu",
                                  progress=False)
    assert {p.name: p.read_bytes() for p in target.parent.iterdir()} == before  # the previous set, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_bad_inputs_exit_2_with_a_clear_message(project, tiny_model, tmp_path):
    from click.testing import CliRunner

    from clumptool.cli import main

    runner = CliRunner()
    (tmp_path / "no_spec").mkdir()
    (tmp_path / "no_spec" / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    (tmp_path / "empty").mkdir()
    pd.DataFrame({"subject_id": [101], "ra": [1.0]}).to_csv(tmp_path / "bad_truth.csv", index=False)
    images, truth = str(project / "images"), str(project / "truth.csv")
    cases = [
        (["predict", "--model", str(tmp_path / "no_spec"), "--images", images, "--out", str(tmp_path / "c" / "c.parquet")],
         "model.json"),
        (["evaluate", "--model", str(tmp_path / "missing"), "--boxes", truth, "--images", images], "model not found"),
        (["predict", "--model", str(tiny_model), "--images", str(tmp_path / "empty"),
          "--out", str(tmp_path / "c" / "c.parquet")], "no images"),
        (["evaluate", "--model", str(tiny_model), "--boxes", str(tmp_path / "bad_truth.csv"), "--images", images,
          "--out", str(tmp_path / "e")], "x1, y1, x2, y2"),
        (["predict", "--model", str(tiny_model), "--images", images, "--out", str(tmp_path / "c" / "c.csv")], "Parquet"),
    ]
    for args, message in cases:
        res = runner.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert "Error:" in res.output and message in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "e").exists()
