"""`clumptool aggregate` end to end, and the click -> box rule."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
from click.testing import CliRunner

from clumptool.aggregation.boxes import clumps_to_boxes, square_boxes
from clumptool.aggregation.subjects import read_subjects
from clumptool.cli import main


def _small_export(b, n_subjects=5):
    rng = np.random.default_rng(0)
    for sid in range(100, 100 + n_subjects):
        for v in range(12):
            b.add(sid, f"v{v}", [(float(150 + rng.normal(0, 1)), float(220 + rng.normal(0, 1)), int(v < 9)),
                                 (float(240 + rng.normal(0, 1)), float(180 + rng.normal(0, 1)), 0)])
    return b


def _subjects_csv(path, ids, fwhm=4.0):
    rows = [{"subject_id": s, "project_id": 1, "workflow_id": 99999, "subject_set_id": 7,
             "metadata": json.dumps({"ra": 150.0 + i, "dec": 2.0, "#fwhmImagePix": fwhm, "#local_id": f"g{s}"}),
             "locations": json.dumps({"0": f"https://example.org/{s}.png"}), "classifications_count": 12,
             "retired_at": "", "retirement_reason": "", "created_at": "", "updated_at": ""}
            for i, s in enumerate(ids)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_aggregate_cli_writes_every_output(export_builder, tmp_path):
    export = _small_export(export_builder).write(tmp_path / "cls.csv")
    subjects = _subjects_csv(tmp_path / "subjects.csv", range(100, 105))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["aggregate", str(export), "--subjects", str(subjects), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("clumps.parquet", "subjects.parquet", "volunteers.parquet", "boxes.parquet", "summary.json",
                 "overview.png"):
        assert (out / name).stat().st_size > 0, name
    boxes = pd.read_parquet(out / "boxes.parquet")
    assert len(boxes) == 10 and set(boxes["label"]) == {1, 2}
    np.testing.assert_allclose(boxes["x2"] - boxes["x1"], 2.5 * 4.0)  # side from the subjects' FWHM
    subj = pd.read_parquet(out / "subjects.parquet")
    assert {"ra", "dec", "fwhmImagePix", "local_id", "is_finished", "risk"} <= set(subj.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clumps_accepted"] == 10 and summary["export"]["rows_read"] == 60
    assert "classifications used 60" in r.output


def test_aggregate_cli_csv_and_dbscan(export_builder, tmp_path):
    export = _small_export(export_builder).write(tmp_path / "cls.csv")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["aggregate", str(export), "--method", "dbscan", "--format", "csv",
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    clumps = pd.read_csv(out / "clumps.csv")
    # DBSCAN clusters per tool: the clump marked with both tools becomes two clusters
    assert len(clumps) == 15


def test_aggregate_cli_bad_input_exits_2_and_writes_nothing(export_builder, tmp_path):
    export_builder.add(1, "a", [(1, 1, 0)])
    export_builder.add(1, "b", None, raw_annotations="[{broken")
    export = export_builder.write(tmp_path / "cls.csv")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["aggregate", str(export), "--strict", "--out", str(out)])
    assert r.exit_code == 2
    assert "classification_id" in r.output and "annotations" in r.output and "Traceback" not in r.output
    assert not out.exists() or not any(out.iterdir())
    r = CliRunner().invoke(main, ["aggregate", str(tmp_path / "missing.csv"), "--out", str(out)])
    assert r.exit_code == 2 and "file not found" in r.output


def test_square_boxes_and_conventions():
    np.testing.assert_allclose(square_boxes([10.0], [20.0], 5.0), [[7.5, 17.5, 12.5, 22.5]])
    clumps = pd.DataFrame({"subject_id": [1, 1, 2], "x": [200.0, 50.0, 60.0], "y": [200.0, 60.0, 70.0],
                           "label": [1, 1, 1], "false_pos_prob": [0.0, 0.8, 0.1],
                           "image_width": 400.0, "image_height": 400.0})
    fwhm = pd.Series({1: 4.0})
    boxes = clumps_to_boxes(clumps, fwhm, box_scale=2.5, box_size=12.0, drop_central=5.0, fold_improbable=True)
    assert len(boxes) == 2  # the central clump is dropped
    assert boxes["label"].tolist() == [2, 1]  # false_pos_prob 0.8 > 0.7 folded into odd
    np.testing.assert_allclose((boxes["x2"] - boxes["x1"]).to_numpy(), [10.0, 12.0])  # FWHM known / unknown
    np.testing.assert_allclose(boxes["score"], [0.2, 0.9])


def test_read_subjects_flattens_metadata_and_strips_hidden_prefix(tmp_path):
    path = _subjects_csv(tmp_path / "s.csv", [5, 6], fwhm=3.5)
    s = read_subjects(path)
    assert s["fwhmImagePix"].tolist() == [3.5, 3.5] and s["local_id"].tolist() == ["g5", "g6"]
    assert "metadata" not in s.columns


def test_the_console_entry_point_exits_with_the_command_s_code_and_full_outputs(export_builder, tmp_path):
    """`clumptool` ends without interpreter teardown: outputs must be complete, messages flushed, codes kept."""
    export = _small_export(export_builder).write(tmp_path / "cls.csv")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "clumptool.cli", "aggregate", str(export), "--out", str(out)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "clumps:" in ok.stdout  # the summary reached the pipe before the process ended
    assert len(pd.read_parquet(out / "clumps.parquet")) == 2 * 5
    assert json.loads((out / "summary.json").read_text())["clumps_accepted"] == 10
    bad = subprocess.run([*cmd[:4], str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.csv: file not found" in bad.stderr
    usage = subprocess.run([*cmd[:3], "aggregate", "--no-such-option"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "No such option" in usage.stderr


def test_a_subjects_file_of_other_galaxies_is_refused_and_one_missing_some_is_noted(export_builder, tmp_path):
    """Boxes would silently fall back to --box-size (and the summary count FWHM boxes that are not there)."""
    export = _small_export(export_builder).write(tmp_path / "cls.csv")
    other = _subjects_csv(tmp_path / "other.csv", range(1100, 1105))
    r = CliRunner().invoke(main, ["aggregate", str(export), "--subjects", str(other), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "none of the export's 5 classified subjects is in it" in r.output
    assert not (tmp_path / "o").exists()
    some = _subjects_csv(tmp_path / "some.csv", [*range(100, 103), *range(1100, 1105)])
    r = CliRunner().invoke(main, ["aggregate", str(export), "--subjects", str(some), "--box-size", "7",
                                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "2 of the 5 classified subjects are not in it" in r.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["boxes_from_fwhm_subjects"] == 3 and summary["classified_subjects_not_in_subjects_file"] == 2
    boxes = pd.read_parquet(tmp_path / "s" / "boxes.parquet")
    side = (boxes["x2"] - boxes["x1"]).groupby(boxes["subject_id"]).first()
    assert side.loc[[100, 101, 102]].tolist() == [10.0] * 3 and side.loc[[103, 104]].tolist() == [7.0] * 2
