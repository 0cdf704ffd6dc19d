"""The detector as one modelled annotator of the consensus (aggregation/machine.py, issue 12 part 2)."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from export_builders import ExportBuilder, simulate_crowd

from clumptool.aggregation.consensus import run_consensus
from clumptool.aggregation.export import read_export
from clumptool.aggregation.machine import (
    MAX_MACHINE_LOG_ODDS,
    add_machine_annotator,
    band_of,
    measured_silence,
    merge_close_detections,
    read_detections,
)
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.cli import main
from clumptool.common.errors import ClumptoolError

CLUMPS = [(120.0, 140.0), (260.0, 230.0)]


def _agreeing(b, sid, n, centres=CLUMPS, prefix="v", seed=0):
    rng = np.random.default_rng(seed + sid)
    for v in range(n):
        b.add(sid, f"{prefix}{v}", [(float(x + rng.normal(0, 1.0)), float(y + rng.normal(0, 1.0)), 0)
                                    for x, y in centres])


def _detections(rows):
    return pd.DataFrame(rows, columns=["subject_id", "x", "y", "score"]).assign(label=1)


def _good_detector(sids, centres=CLUMPS, score=0.95):
    """A detector that finds every clump of these galaxies with a high score."""
    return _detections([(s, x + 0.5, y - 0.5, score) for s in sids for x, y in centres])


def _run(b, tmp_path, detections=None, **opts):
    path = b.write(tmp_path / "e.csv")
    if detections is not None:
        detections.to_csv(tmp_path / "det.csv", index=False)
    return aggregate(path, options=AggregateOptions(**opts),
                     detections=None if detections is None else tmp_path / "det.csv")


def _background(b, n_galaxies=30, n=4):
    """Obvious galaxies 100.. the crowd and the detector agree on: where the bands' skills are learned."""
    for sid in range(100, 100 + n_galaxies):
        _agreeing(b, sid, n)


@pytest.mark.parametrize("n", [3, 10])
def test_unanimous_humans_marking_nothing_are_not_overturned(tmp_path, n):
    b = ExportBuilder()
    _background(b, n=10)
    for v in range(n):  # galaxy 1: n of n volunteers mark nothing; the detector is sure of a clump
        b.add(1, f"v{v}", [])
    det = pd.concat([_good_detector(range(100, 130)), _detections([(1, 200.0, 200.0, 0.99)])])
    res = _run(b, tmp_path, det)
    c = res.clumps
    assert not c[(c["subject_id"] == 1) & c["accepted"]].shape[0]
    s = res.subjects.set_index("subject_id")
    assert s.loc[1, "n_clumps"] == 0 and s.loc[1, "n_viewers"] == n  # the detector is no viewer of the humans'
    # with 3 volunteers the detector's sure detection keeps the galaxy open for more eyes; 10 settle it
    assert (s.loc[1, "expected_missed"] > 0.1) == (n == 3), s.loc[1, "finished_reason"]


@pytest.mark.parametrize("n", [3, 10])
def test_unanimous_humans_marking_a_clump_are_not_overturned(tmp_path, n):
    b = ExportBuilder()
    _background(b, n=10)
    _agreeing(b, 1, n, centres=[(200.0, 200.0)])  # n of n mark it; the detector, good elsewhere, misses it
    det = _good_detector(range(100, 130))
    res = _run(b, tmp_path, det)
    c = res.clumps[res.clumps["subject_id"] == 1]
    assert c["accepted"].sum() == 1
    row = c[c["accepted"]].iloc[0]
    assert row["machine_evidence"] < 0  # the detector's silence counted against it ...
    assert row["machine_evidence"] >= -MAX_MACHINE_LOG_ODDS - 1e-9  # ... within the cap
    assert row["human_evidence"] > -row["machine_evidence"] and row["false_pos_prob"] < 0.01
    assert "the detector did not mark it" in row["evidence"]


def test_a_detection_agreeing_with_few_humans_raises_confidence_and_finishes_earlier(tmp_path):
    b = ExportBuilder()
    _background(b, n=4)
    rng = np.random.default_rng(5)
    for v in range(3):  # galaxy 1: 3 volunteers, 2 of them mark one spot
        marks = [(float(200 + rng.normal(0, 1.0)), float(210 + rng.normal(0, 1.0)), 0)] if v < 2 else []
        b.add(1, f"v{v}", marks)
    without = _run(b, tmp_path, None)
    with_det = _run(b, tmp_path, pd.concat([_good_detector(range(100, 130)),
                                            _detections([(1, 200.3, 209.6, 0.97)])]))
    c0 = without.clumps[without.clumps["subject_id"] == 1].iloc[0]
    c1 = with_det.clumps[with_det.clumps["subject_id"] == 1].iloc[0]
    assert c1["false_pos_prob"] < c0["false_pos_prob"]
    assert c1["machine_evidence"] > 0 and c1["n_machine_marks"] == 1 and c1["n_marks"] == 2
    assert "the detector marked it" in c1["evidence"]
    s0, s1 = without.subjects.set_index("subject_id"), with_det.subjects.set_index("subject_id")
    assert s1.loc[1, "expected_errors"] < s0.loc[1, "expected_errors"]
    assert s1.loc[1, "n_viewers"] == s0.loc[1, "n_viewers"] == 3


def test_a_galaxy_the_detector_confirms_finishes_at_three(tmp_path):
    b = ExportBuilder()
    _background(b, n=4)
    rng = np.random.default_rng(1)
    for v in range(3):  # galaxy 1: 3 volunteers mark clump A, one of them clump B too; the detector marks both
        b.add(1, f"v{v}", [(float(x + rng.normal(0, 1)), float(y + rng.normal(0, 1)), 0)
                           for x, y in (CLUMPS if v == 0 else CLUMPS[:1])])
    without = _run(b, tmp_path, None).subjects.set_index("subject_id")
    with_det = _run(b, tmp_path, _good_detector([*range(100, 130), 1])).subjects.set_index("subject_id")
    assert not without.loc[1, "is_finished"] and without.loc[1, "n_clumps"] == 1, without.loc[1, "finished_reason"]
    assert with_det.loc[1, "is_finished"], with_det.loc[1, "finished_reason"]
    assert with_det.loc[1, "n_clumps"] == 2 and "with 3 classifications" in with_det.loc[1, "finished_reason"]


def test_the_detector_alone_never_makes_a_clump(tmp_path):
    b = ExportBuilder()
    _background(b, n=4)
    b.add(1, "v0", [])
    b.add(1, "v1", [])
    res = _run(b, tmp_path, pd.concat([_good_detector(range(100, 130)), _detections([(1, 200.0, 200.0, 1.0)])]))
    assert not res.clumps[(res.clumps["subject_id"] == 1) & res.clumps["accepted"]].shape[0]


def test_high_score_band_learns_a_lower_false_positive_rate(tmp_path):
    rng = np.random.default_rng(11)
    b, truth, _ = simulate_crowd(rng, n_subjects=60, per_subject=12)
    rows = []
    for sid, x, y, _label in truth:  # the detector finds 90% of the clumps at high scores ...
        if rng.random() < 0.9:
            rows.append((sid, x + rng.normal(0, 1), y + rng.normal(0, 1), rng.uniform(0.7, 1.0)))
    for sid in range(5000, 5060):  # ... and adds low-scoring false detections on empty disc
        for _ in range(rng.poisson(1.5)):
            rows.append((sid, *rng.uniform(130, 270, 2), rng.uniform(0.05, 0.5)))
    data = read_export(b.write(tmp_path / "e.csv"))
    res = run_consensus(data, detections=_detections(rows))
    v = res.volunteers[res.volunteers["machine"]].set_index("user_key")
    high = v.loc[["detector:0.70-0.90", "detector:0.90-1.00"], "p_fp"]
    low = v.loc[["detector:0.05-0.30", "detector:0.30-0.50"], "p_fp"]
    assert high.max() < 0.3 < low.min(), v[["p_fp", "p_fn", "n_marks"]]
    assert not res.volunteers.loc[~res.volunteers["machine"], "user_key"].str.startswith("detector:").any()


def test_bands_and_annotator_rows(tmp_path):
    assert band_of(np.array([0.0, 0.05, 0.3, 0.99, 1.0])).tolist() == [-1, 0, 1, 4, 4]
    b = ExportBuilder()
    _agreeing(b, 1, 3)
    data = read_export(b.write(tmp_path / "e.csv"))
    det = _detections([(1, 10.0, 10.0, 0.6), (1, 20.0, 20.0, 0.01), (77, 5.0, 5.0, 0.9)])
    ann = add_machine_annotator(data, det)
    assert ann.n_detections_used == 1 and ann.n_below_bands == 1 and ann.subjects_outside_export == [77]
    assert ann.is_machine.sum() == 5 and len(ann.data.classifications) == len(data.classifications) + 5
    assert (ann.data.classifications["classification_id"] < 0).sum() == 5  # never a real id


def test_one_spot_one_detection_so_the_bands_stay_exclusive(tmp_path):
    b = ExportBuilder()
    _agreeing(b, 1, 3)
    data = read_export(b.write(tmp_path / "e.csv"))
    # a "clump" box and an "odd clump" box on one spot (per-class NMS keeps both), another spot 20 px away
    det = pd.DataFrame({"subject_id": [1, 1, 1, 2], "x": [100.0, 101.5, 120.0, 100.0], "y": [100.0, 99.0, 100.0, 100.0],
                        "score": [0.25, 0.6, 0.4, 0.9], "label": [2, 1, 1, 1]})
    kept = merge_close_detections(det, 5.0)
    assert kept.index.tolist() == [1, 2, 3]  # the 0.6 "clump" absorbed the 0.25 "odd clump"; other galaxy apart
    assert merge_close_detections(det, 0.0).equals(det)
    ann = add_machine_annotator(data, det)
    machine = ann.data.marks[ann.data.marks["volunteer"] >= len(data.volunteers)]
    assert ann.n_merged == 1 and ann.n_detections_used == 2 and len(machine) == 2
    assert sorted(machine["tool"].tolist()) == [0, 0]  # the kept detection's label: a normal clump


@pytest.mark.parametrize("content,needle", [
    ("subject_id,x,y\n1,2,3\n", "missing column(s) score"),
    ("subject_id,x,y,score\n1,2,3,0.5\n1,2,3,1.7\n", "line 3, field 'score': 1.7 is not"),
    ("subject_id,x,y,score\nabc,2,3,0.5\n", "line 2, field 'subject_id'"),
    ("subject_id,x,y,score\n1,,3,0.5\n", "line 2, field 'x'"),
    ("subject_id,x,y,score,label\n1,2,3,0.5,7\n", "line 2, field 'label'"),
])
def test_catalogue_validation_names_file_row_and_field(tmp_path, content, needle):
    p = tmp_path / "det.csv"
    p.write_text(content)
    with pytest.raises(ClumptoolError) as e:
        read_detections(p)
    assert str(p) in str(e.value) and needle in str(e.value)
    assert "fix" in str(e.value) or "give" in str(e.value)


def test_reads_a_predict_catalogue_in_parquet(tmp_path):
    cat = pd.DataFrame({"subject_id": ["1", "2"], "clump_id": [0, 1], "clump_label_id": [1, 2],
                        "clump_score": [0.9, 0.4], "clump_centre_px_x": [10.0, 20.0], "clump_centre_px_y": [5.0, 6.0]})
    cat.to_parquet(tmp_path / "catalogue.parquet")
    t = read_detections(tmp_path / "catalogue.parquet").table
    assert t["subject_id"].tolist() == [1, 2] and t["label"].tolist() == [1, 2] and t["x"].tolist() == [10.0, 20.0]
    with pytest.raises(ClumptoolError, match="not found"):
        read_detections(tmp_path / "nope.parquet")


def test_aggregate_detections_end_to_end_via_the_cli(tmp_path):
    b = ExportBuilder()
    _background(b, n_galaxies=10, n=4)
    export = b.write(tmp_path / "e.csv")
    det = pd.concat([_good_detector(range(100, 110)), _detections([(999, 5.0, 5.0, 0.9)])])
    det.to_csv(tmp_path / "det.csv", index=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["aggregate", str(export), "--detections", str(tmp_path / "det.csv"),
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    clumps = pd.read_parquet(out / "clumps.parquet")
    assert {"human_evidence", "machine_evidence", "n_machine_marks"} <= set(clumps.columns)
    assert (clumps.loc[clumps["accepted"], "n_machine_marks"] == 1).all()
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["fit"]["detector"]["subjects_outside_export"] == 1
    vols = pd.read_parquet(out / "volunteers.parquet")
    assert vols["machine"].sum() == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("subject_id,x\n1,2\n")
    r = CliRunner().invoke(main, ["aggregate", str(export), "--detections", str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "missing column(s)" in r.output and "Traceback" not in r.output


def test_the_miss_rate_is_counted_on_clumps_several_volunteers_are_sure_of():
    p_false = np.r_[np.full(20, 0.01), np.full(30, 0.02), np.full(10, 0.5)]
    n_human = np.r_[np.full(20, 3), np.full(30, 1), np.full(10, 3)]  # single clicks the model calls real: not counted
    silent = np.r_[np.arange(20) < 2, np.ones(30, bool), np.ones(10, bool)]
    assert measured_silence(p_false, n_human, silent) == pytest.approx((2 + 1) / (20 + 2))
    assert measured_silence(np.zeros(0), np.zeros(0), np.zeros(0, bool)) == pytest.approx(0.5)  # nothing sure: no say
    assert measured_silence(np.full(500, 0.01), np.full(500, 3), np.zeros(500, bool)) == pytest.approx(
        np.exp(-MAX_MACHINE_LOG_ODDS))  # never surer than the cap


@pytest.mark.parametrize("found", [1.0, 0.5])
def test_the_detectors_silence_weighs_what_its_measured_miss_rate_says(tmp_path, found):
    """A detector that finds every clump the crowd agrees on: its silence is strong evidence; one that finds half
    of them: about log(0.5), whatever its bands' separately learned rates add up to."""
    b = ExportBuilder()
    _background(b, n_galaxies=40, n=4)
    b.add(1, "v0", [(200.0, 60.0, 0)])  # galaxy 1: a click the detector did not mark
    for v in range(1, 4):
        b.add(1, f"v{v}", [])
    sids = list(range(100, 100 + int(40 * found)))
    res = _run(b, tmp_path, _good_detector(sids))
    lone = res.marks[(res.marks["subject_id"] == 1) & ~res.marks["machine"]]
    silence = float(res.clumps.loc[res.clumps["n_machine_marks"] == 0, "machine_evidence"].iloc[0]
                    if (res.clumps["n_machine_marks"] == 0).any() else lone["machine_evidence"].iloc[0])
    miss = res.subjects["machine_miss_prob"].iloc[0]
    if found == 1.0:
        assert miss < 0.05 and silence < -3
    else:
        assert miss == pytest.approx(0.5, abs=0.05) and -1.0 < silence < -0.4


def _catalogue_with_field(path, detections, **settings):
    """``detections`` as a predict catalogue (Parquet) whose run settings name the detector's field."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(detections, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"clumptool": json.dumps(settings).encode()}), path)
    return path


def test_the_field_of_view_is_read_from_the_catalogue(tmp_path):
    det = _detections([(1, 10.0, 5.0, 0.9)])
    field = read_detections(_catalogue_with_field(tmp_path / "c.parquet", det, crop=192, drop_central=8.0)).field
    assert (field.crop, field.drop_central) == (192.0, 8.0)
    inside = field.sees(np.array([200.0, 200.0, 290.0, 310.0, 200.0]), np.array([200.0, 210.0, 200.0, 200.0, 80.0]),
                        400.0, 400.0)
    assert inside.tolist() == [False, True, True, False, False]  # the dropped disc, in, in, out, out
    assert read_detections(_catalogue_with_field(tmp_path / "old.parquet", det)).field.whole_image
    det.to_csv(tmp_path / "plain.csv", index=False)
    assert read_detections(tmp_path / "plain.csv").field.whole_image
    with pytest.raises(ClumptoolError, match="crop='big' is not a size in px"):
        read_detections(_catalogue_with_field(tmp_path / "bad.parquet", det, crop="big"))


def test_the_detectors_silence_outside_its_field_is_no_evidence(tmp_path):
    """A click 140 px above the centre of a 400 px image: a detector that saw the whole image and found every
    clump the crowd agrees on says it is not there; one that saw the central 192 px says nothing about it."""
    b = ExportBuilder()
    _background(b, n_galaxies=40, n=4)
    b.add(1, "v0", [(200.0, 60.0, 0)])
    for v in range(1, 4):
        b.add(1, f"v{v}", [])
    path = b.write(tmp_path / "e.csv")
    det = _good_detector(list(range(100, 140)))

    def silence(**settings):
        cat = _catalogue_with_field(tmp_path / f"c{len(settings)}.parquet", det, **settings)
        res = aggregate(path, options=AggregateOptions(), detections=cat)
        on_click = res.marks[(res.marks["subject_id"] == 1) & ~res.marks["machine"]]["machine_evidence"]
        singles = res.clumps[(res.clumps["subject_id"] == 1) & (res.clumps["n_machine_marks"] == 0)]
        return float(singles["machine_evidence"].iloc[0] if len(singles) else on_click.iloc[0])

    assert silence() < -3 and silence(crop=192) == pytest.approx(0.0)


def test_without_a_measured_single_click_rate_the_summary_says_so(tmp_path):
    b = ExportBuilder()
    _background(b, n=4)  # every galaxy has 4 viewers: none has the 2k it takes to measure clicks at k >= 2
    lean = _run(b, tmp_path, _good_detector(range(100, 130)))
    assert any("without a measured single-click rate" in n for n in lean.summary["notes"]), lean.summary["notes"]
    assert not any("single-click" in n for n in _run(b, tmp_path, None).summary["notes"])  # no detector, no note
    rng = np.random.default_rng(5)
    for sid in range(200, 230):  # galaxies that had 20 volunteers (each marking a clump 60% of the time, so some
        for v in range(20):      # spots have one marker among the first few) measure it in the export itself
            b.add(sid, f"w{v}", [(float(x + rng.normal(0, 1)), float(y + rng.normal(0, 1)), 0)
                                 for x, y in CLUMPS if rng.random() < 0.6])
    full = _run(b, tmp_path, _good_detector(range(100, 130)))
    assert full.summary["stopping"]["single_click_spots"][1] > 0
    assert not any("single-click" in n for n in full.summary["notes"]), full.summary["notes"]


def test_a_catalogue_of_other_galaxies_is_refused_not_read_as_a_silent_detector(tmp_path):
    """Its silence on every galaxy of the export would move the stopping rule (galaxies finished on nothing)."""
    b = ExportBuilder()
    _background(b, n_galaxies=5)
    with pytest.raises(ClumptoolError, match=r"none of its 10 detections is of a galaxy in this export") as e:
        _run(b, tmp_path, _good_detector(range(5100, 5105)))
    assert "det.csv" in str(e.value)
    assert _run(b, tmp_path, _good_detector(range(100, 103))).summary["fit"]["detector"]["detections_used"] == 6


def test_a_detection_outside_its_galaxys_image_is_refused_naming_its_line(tmp_path):
    b = ExportBuilder()  # 400 x 400 px images
    _background(b, n_galaxies=5)
    det = _good_detector(range(100, 105))
    det.loc[3, "x"] = 4120.0  # another pixel frame
    with pytest.raises(ClumptoolError, match=r"det.csv, line 5: the detection at \(4120, .*outside the 400 x 400"):
        _run(b, tmp_path, det)


def _single_click_galaxy(b, sid=1, n=3):
    """``n`` volunteers; the first marks a spot nobody else does (a faint clump, or a stray click)."""
    b.add(sid, "w0", [(200.0, 210.0, 0)])
    for v in range(1, n):
        b.add(sid, f"w{v}", [])


def test_where_predict_did_not_look_the_detector_is_no_annotator(tmp_path):
    """predict lists the galaxies it looked at (galaxies.parquet beside the catalogue): on a galaxy absent from it
    (say uploaded after predict ran) its silence is no evidence, and the summary says how many there were."""
    b = ExportBuilder()
    _background(b, n_galaxies=20)
    _single_click_galaxy(b)
    det = _good_detector(range(100, 120))
    looked = [*range(100, 120), 1]
    pd.DataFrame({"subject_id": [str(i) for i in looked]}).to_parquet(tmp_path / "galaxies.parquet")
    res = _run(b, tmp_path, det)
    subj = res.subjects.set_index("subject_id")
    spot = res.clumps[res.clumps["subject_id"] == 1].iloc[0]
    assert subj.loc[1, "detector_looked"] and spot["detector_looked"] and spot["machine_evidence"] < 0
    assert res.summary["galaxies_the_detector_did_not_look_at"] == 0

    pd.DataFrame({"subject_id": [str(i) for i in range(100, 120)]}).to_parquet(tmp_path / "galaxies.parquet")
    res = _run(b, tmp_path, det)
    subj = res.subjects.set_index("subject_id")
    spot = res.clumps[res.clumps["subject_id"] == 1].iloc[0]
    assert not subj.loc[1, "detector_looked"] and not spot["detector_looked"] and spot["machine_evidence"] == 0
    assert subj.loc[1, "machine_miss_prob"] == 1.0 and subj.loc[100, "detector_looked"]
    assert res.summary["galaxies_the_detector_did_not_look_at"] == 1
    assert any("did not look at 1 of the export's 21 galaxies" in n for n in res.summary["notes"])

    with pytest.raises(ClumptoolError, match="detections of 20 galaxies its galaxies.parquet does not list"):
        pd.DataFrame({"subject_id": ["5100", "5101"]}).to_parquet(tmp_path / "galaxies.parquet")
        _run(b, tmp_path, det)  # a galaxies file that is not this catalogue's
    with pytest.raises(ClumptoolError, match="predict looked at none of this export's 21 galaxies"):
        _run(b, tmp_path, _good_detector([5100, 5101]))


def test_a_copied_catalogue_without_its_galaxies_file_uses_what_its_metadata_records(tmp_path):
    """Copied out of predict's folder, a catalogue still records how many galaxies predict looked at and which had
    no image: the latter are not looked at; fewer looked at than the export holds, with no list, is refused."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    b = ExportBuilder()
    _background(b, n_galaxies=20)
    _single_click_galaxy(b)
    path = b.write(tmp_path / "e.csv")
    det = _good_detector(range(100, 120)).rename(columns={"x": "clump_centre_px_x", "y": "clump_centre_px_y",
                                                          "score": "clump_score", "label": "clump_label_id"})

    def catalogue(meta: dict):
        table = pa.Table.from_pandas(det.assign(subject_id=det["subject_id"].astype(str)), preserve_index=False)
        target = tmp_path / f"copied-{len(list(tmp_path.glob('copied-*')))}.parquet"
        pq.write_table(table.replace_schema_metadata({b"clumptool": json.dumps(meta).encode()}), target)
        return target

    missing = catalogue({"n_images": 20, "missing_images": ["1"]})
    res = aggregate(path, options=AggregateOptions(), detections=missing)
    assert not res.subjects.set_index("subject_id").loc[1, "detector_looked"]
    assert res.summary["galaxies_the_detector_did_not_look_at"] == 1
    with pytest.raises(ClumptoolError, match=r"predict looked at 20 galaxies, fewer than this export's 21"):
        aggregate(path, options=AggregateOptions(), detections=catalogue({"n_images": 20, "missing_images": []}))
    every = aggregate(path, options=AggregateOptions(), detections=catalogue({"n_images": 21}))
    assert every.subjects["detector_looked"].all() and every.summary["galaxies_the_detector_did_not_look_at"] == 0
