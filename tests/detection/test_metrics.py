"""Completeness/purity matching on hand-made cases with known answers, curves, best-F1 threshold, mAP."""

from __future__ import annotations

import numpy as np
import pytest

from clumptool.aggregation.boxes import square_boxes
from clumptool.common.errors import ClumptoolError
from clumptool.detection.metrics import (
    ImageResult,
    MatchSettings,
    box_iou,
    evaluate_images,
    match_detections,
    mean_average_precision,
    score_curve,
)

SIDE = 10.0  # box side = 2.5 x FWHM, so the default centre radius is one FWHM = 4 px


def sq(xs, ys, side=SIDE):
    return square_boxes(np.asarray(xs, float), np.asarray(ys, float), side)


def image(sid, pred_xy, scores, true_xy, pred_labels=None, true_labels=None):
    pb = sq(*zip(*pred_xy, strict=True)) if pred_xy else np.zeros((0, 4))
    tb = sq(*zip(*true_xy, strict=True)) if true_xy else np.zeros((0, 4))
    pl = np.ones(len(pb), int) if pred_labels is None else pred_labels
    tl = np.ones(len(tb), int) if true_labels is None else true_labels
    return ImageResult(sid, pb, np.asarray(scores, float), pl, tb, tl)


def overall(images, threshold=0.0, **kw):
    ev = evaluate_images(images, {1: "clump", 2: "odd_clump"}, MatchSettings(**kw), threshold=threshold)
    return ev.summary


def test_perfect_detections_are_complete_and_pure():
    truth = [(20, 20), (40, 30), (50, 50)]
    s = overall([image("a", truth, [0.9, 0.8, 0.7], truth)])["overall"]["at_threshold"]
    assert (s["n_true"], s["n_det"], s["n_matched"]) == (3, 3, 3)
    assert s["completeness"] == 1.0 and s["purity"] == 1.0 and s["f1"] == 1.0


@pytest.mark.parametrize(("shift", "matched"), [(0.0, 1), (3.9, 1), (4.1, 0), (8.0, 0)])
def test_centre_match_radius_is_one_fwhm_from_the_box_side(shift, matched):
    m = match_detections(sq([20 + shift], [20]), [0.9], sq([20], [20]))
    assert int((m >= 0).sum()) == matched


def test_fixed_radius_and_per_truth_radius():
    pred, truth = sq([26], [20]), sq([20], [20])
    assert match_detections(pred, [0.9], truth, max_dist=7.0)[0] == 0
    assert match_detections(pred, [0.9], truth, max_dist=5.0)[0] == -1
    assert match_detections(pred, [0.9], truth, max_dist=np.array([6.5]))[0] == 0


@pytest.mark.parametrize(("shift", "matched"), [(3.0, True), (4.0, False)])
def test_iou_match(shift, matched):
    # squares of side 10 shifted by s along x: IoU = (10 - s) / (10 + s): 0.538 at 3 px, 0.429 at 4 px
    pred, truth = sq([20 + shift], [20]), sq([20], [20])
    assert box_iou(pred, truth)[0, 0] == pytest.approx((10 - shift) / (10 + shift))
    m = match_detections(pred, [0.9], truth, method="iou", iou_thresh=0.5)
    assert bool(m[0] == 0) is matched


def test_missing_clump_lowers_completeness_only():
    s = overall([image("a", [(20, 20)], [0.9], [(20, 20), (50, 50)])])["overall"]["at_threshold"]
    assert s["completeness"] == 0.5 and s["purity"] == 1.0


def test_duplicate_detection_is_a_false_positive_and_the_higher_score_wins():
    # the farther detection has the higher score: greedy-by-score gives the clump to it
    m = match_detections(sq([22, 20], [20, 20]), [0.9, 0.5], sq([20], [20]))
    assert m.tolist() == [0, -1]
    s = overall([image("a", [(22, 20), (20, 20)], [0.9, 0.5], [(20, 20)])])["overall"]["at_threshold"]
    assert s["completeness"] == 1.0 and s["purity"] == 0.5


def test_empty_image_with_detections_counts_false_positives():
    imgs = [image("a", [(20, 20)], [0.9], [(20, 20)]), image("empty", [(30, 30), (40, 40)], [0.8, 0.7], [])]
    s = overall(imgs)["overall"]["at_threshold"]
    assert (s["n_true"], s["n_det"], s["n_matched"]) == (1, 3, 1)
    assert s["purity"] == pytest.approx(1 / 3) and s["completeness"] == 1.0


def test_empty_truth_and_no_detections_are_undefined_never_one():
    s = overall([image("a", [], [], [])])["overall"]
    assert s["at_threshold"]["n_true"] == 0 and s["at_threshold"]["n_det"] == 0
    assert np.isnan(s["at_threshold"]["completeness"]) and np.isnan(s["at_threshold"]["purity"])
    assert np.isnan(s["at_threshold"]["f1"]) and s["best_f1"]["threshold"] is None
    # detections but no truth: purity is measured (0), completeness is not, so neither is F1 nor a best threshold
    s = overall([image("a", [(20, 20)], [0.9], [])])["overall"]
    assert s["at_threshold"]["purity"] == 0.0 and np.isnan(s["at_threshold"]["completeness"])
    assert np.isnan(s["at_threshold"]["f1"]) and s["best_f1"]["threshold"] is None
    # truth but no detection above the threshold: completeness 0, purity undefined, F1 0 (nothing found)
    s = overall([image("a", [(20, 20)], [0.3], [(20, 20)])], threshold=0.5)["overall"]["at_threshold"]
    assert s["completeness"] == 0.0 and np.isnan(s["purity"]) and s["f1"] == 0.0


def test_map_minus_one_is_reported_as_undefined():
    res = mean_average_precision([image("a", [(20, 20)], [0.9], [])])  # no ground truth: torchmetrics says -1
    assert np.isnan(res["map"]) and np.isnan(res["map_50"])


def test_per_class_and_class_agnostic():
    # a normal clump detected as odd: matched overall, a miss for 'clump' and a false positive for 'odd_clump'
    imgs = [image("a", [(20, 20), (50, 50)], [0.9, 0.8], [(20, 20), (50, 50)],
                  pred_labels=np.array([2, 1]), true_labels=np.array([1, 1]))]
    s = overall(imgs)
    assert s["overall"]["at_threshold"]["n_matched"] == 2
    assert s["clump"]["at_threshold"]["completeness"] == 0.5 and s["clump"]["at_threshold"]["purity"] == 1.0
    assert s["odd_clump"]["at_threshold"]["n_true"] == 0
    assert s["odd_clump"]["at_threshold"]["purity"] == 0.0


def test_hungarian_finds_more_matches_than_greedy():
    truth = sq([0, 6], [20, 20])
    pred = sq([3.5, 9], [20, 20])
    greedy = match_detections(pred, [0.9, 0.8], truth, max_dist=4.0)
    hung = match_detections(pred, [0.9, 0.8], truth, max_dist=4.0, assignment="hungarian")
    assert greedy.tolist() == [1, -1]
    assert hung.tolist() == [0, 1]


def test_threshold_curve_and_best_f1_threshold_known_answer():
    truth = [(10, 10), (30, 10), (50, 10), (10, 50)]
    # scores 0.9 TP, 0.8 TP, 0.7 FP, 0.6 TP, 0.5 FP, 0.4 FP; the fourth clump is never found
    pred = [(10, 10), (30, 10), (40, 40), (50, 10), (60, 60), (30, 50)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    curve = score_curve([image("a", pred, scores, truth)], MatchSettings())
    assert curve.thresholds.tolist() == scores
    np.testing.assert_allclose(curve.completeness, [0.25, 0.5, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(curve.purity, [1, 1, 2 / 3, 0.75, 0.6, 0.5])
    best = curve.best_f1()
    assert best["threshold"] == 0.6 and best["f1"] == pytest.approx(0.75)
    assert curve.at(0.65)["n_det"] == 3 and curve.at(0.95)["n_det"] == 0
    ev = evaluate_images([image("a", pred, scores, truth)], {1: "clump"}, MatchSettings())
    assert ev.threshold == 0.6  # the common threshold defaults to the overall best-F1 one


def test_curves_equal_rematching_at_every_threshold():
    rng = np.random.default_rng(3)
    imgs = []
    for k in range(20):
        t = rng.uniform(0, 64, size=(rng.integers(0, 5), 2))
        p = rng.uniform(0, 64, size=(rng.integers(0, 7), 2))
        if len(t):
            p = np.vstack([p, t + rng.normal(0, 3, size=t.shape)])
        imgs.append(image(str(k), list(map(tuple, p)), rng.uniform(0, 1, len(p)), list(map(tuple, t))))
    imgs.append(image("conflict", [(13.5, 20), (19, 20)], [0.95, 0.85], [(10, 20), (16, 20)]))  # greedy: 1, best: 2
    settings = MatchSettings()
    curve = score_curve(imgs, settings)
    for thr in curve.thresholds:
        matched = sum(int((match_detections(im.pred_boxes[im.pred_scores >= thr], im.pred_scores[im.pred_scores >= thr],
                                            im.true_boxes) >= 0).sum()) for im in imgs)
        assert curve.at(float(thr))["n_matched"] == matched
    hung = MatchSettings(assignment="hungarian")
    hcurve = score_curve(imgs, hung)
    np.testing.assert_array_equal(hcurve.thresholds, curve.thresholds)
    np.testing.assert_array_equal(hcurve.n_det, curve.n_det)
    assert np.all(hcurve.n_matched >= curve.n_matched)  # Hungarian maximises the number of matches
    assert np.any(hcurve.n_matched > curve.n_matched)  # and here finds more somewhere
    for thr, got in zip(hcurve.thresholds, hcurve.n_matched, strict=True):
        keep = [im.pred_scores >= thr for im in imgs]
        brute = sum(int((match_detections(im.pred_boxes[k], im.pred_scores[k], im.true_boxes, settings=hung) >= 0)
                        .sum()) for im, k in zip(imgs, keep, strict=True))
        assert got == brute


def test_map_is_one_for_perfect_predictions_and_lower_when_shifted():
    truth = [(20, 20), (40, 30)]
    perfect = [image("a", truth, [0.9, 0.8], truth, np.array([1, 2]), np.array([1, 2])),
               image("b", [(30, 30)], [0.7], [(30, 30)])]
    res = mean_average_precision(perfect)
    assert res["map"] == pytest.approx(1.0) and res["map_50"] == pytest.approx(1.0)
    assert res["map_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    shifted = [image("a", [(23, 20)], [0.9], [(20, 20)])]  # IoU 0.54: counts at 0.5, not at 0.55+
    res = mean_average_precision(shifted)
    assert res["map_50"] == pytest.approx(1.0) and res["map"] == pytest.approx(0.1)


def test_bad_settings_are_rejected():
    with pytest.raises(ClumptoolError, match="--match 'nearest': use one of centre, iou"):
        MatchSettings(method="nearest")
    with pytest.raises(ClumptoolError, match="--max-dist -1.0: must be a positive number"):
        MatchSettings(max_dist=-1.0)
