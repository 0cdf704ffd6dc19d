"""The simulated project: reproducible bytes, truth that matches the pixels, valid exports, realistic rates."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from folder_digest import folder_digest
from PIL import Image

from clumptool.aggregation.export import EXPORT_COLUMNS, read_export
from clumptool.cli import main
from clumptool.common.wcs import sky_to_pixel
from clumptool.simulation.config import SimulationConfig, VolunteerModelConfig
from clumptool.simulation.project import simulate_project, simulate_volunteer_export

SMALL = dict(galaxies=8, volunteers_per_subject=6, image_size=128, seed=5, clumpy_fraction=1.0, workers=1)




@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "p"
    simulate_project(out, SimulationConfig(**SMALL))
    return out


def test_same_seed_same_bytes_other_seed_differs(project, tmp_path):
    again = tmp_path / "again"
    simulate_project(again, SimulationConfig(**SMALL))
    assert folder_digest(project) == folder_digest(again)
    other = tmp_path / "other"
    simulate_project(other, SimulationConfig(**{**SMALL, "seed": 6}))
    assert folder_digest(project) != folder_digest(other)


def test_files_written(project):
    for name in ("truth.csv", "subjects.csv", "classifications.csv", "volunteers_truth.csv", "workflow.json",
                 "README.txt", "preview.png", "objects.csv", "marks_truth.csv", "manifest.json"):
        assert (project / name).stat().st_size > 0, name
    assert len(list((project / "images").glob("*.png"))) == SMALL["galaxies"]
    img = Image.open(next((project / "images").glob("*.png")))
    assert img.size == (128, 128) and img.mode == "RGB"


def test_truth_clumps_are_brighter_than_their_surroundings(project):
    truth = pd.read_csv(project / "truth.csv")
    bright = truth[truth["peak_snr"] > 10]
    assert len(bright) >= 3
    for _, t in bright.iterrows():
        img = np.asarray(Image.open(project / "images" / f"{int(t['subject_id'])}.png").convert("L"), float)
        x, y, r = int(t["x"]), int(t["y"]), max(2, int(round(t["fwhm_px"])))
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        d = np.hypot(xx + 0.5 - t["x"], yy + 0.5 - t["y"])
        annulus = img[(d > 1.5 * r) & (d < 2.5 * r)]
        assert img[y, x] > np.median(annulus), (t["subject_id"], t["x"], t["y"])


def test_export_is_the_zooniverse_format(project):
    cls = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    assert tuple(cls.columns) == EXPORT_COLUMNS
    forms = set()
    for _, row in cls.iterrows():
        meta, ann, sd = (json.loads(row[c]) for c in ("metadata", "annotations", "subject_data"))
        assert meta["subject_dimensions"][0]["naturalWidth"] == 128
        assert [a["task"] for a in ann] == ["T0", "T1"] and ann[0]["value"] in ("Yes", "No")
        for m in ann[1]["value"]:
            assert 0 <= m["x"] <= 128 and 0 <= m["y"] <= 128
            forms.add("fem" if "toolIndex" in m else "pfe")
            assert m.get("tool", m.get("toolIndex")) in (0, 1)
        assert list(sd) == [row["subject_ids"]]
        assert (row["user_id"] == "") == row["user_name"].startswith("not-logged-in-")
    assert forms == {"fem", "pfe"}
    subjects = pd.read_csv(project / "subjects.csv")
    meta = json.loads(subjects["metadata"].iloc[0])
    assert {"ra", "dec", "#fwhmImagePix", "#arcsecPerSide", "#local_id"} <= set(meta)


def test_export_parses_with_the_aggregation_reader_without_dropping_rows(project):
    data = read_export(project / "classifications.csv")
    rep = data.report
    assert not rep.rows_skipped and not {k for k in rep.marks_dropped if "repeat" not in k}
    assert rep.rows_read == len(pd.read_csv(project / "classifications.csv"))


def test_truth_sky_positions_follow_the_wcs(project):
    truth = pd.read_csv(project / "truth.csv")
    subj = pd.read_csv(project / "subjects.csv")
    t = truth.iloc[0]
    meta = json.loads(subj.set_index("subject_id").loc[t["subject_id"], "metadata"])
    x, y = sky_to_pixel([t["ra"]], [t["dec"]], meta["ra"], meta["dec"], meta["#arcsecPerSide"] / 128, 128, 128)
    assert abs(x[0] - t["x"]) < 1e-6 and abs(y[0] - t["y"]) < 1e-6


def test_realistic_volunteers_realise_their_parameters(tmp_path):
    out = tmp_path / "big"
    cfg = SimulationConfig(galaxies=400, volunteers_per_subject=20, seed=2, images=False, clumpy_fraction=1.0)
    simulate_project(out, cfg)
    truth = pd.read_csv(out / "truth.csv")
    vt = pd.read_csv(out / "volunteers_truth.csv")
    data = read_export(out / "classifications.csv")
    m = data.marks.merge(data.volunteers[["volunteer", "user_name"]], on="volunteer")
    m = m.merge(truth[["subject_id", "x", "y", "peak_snr"]], on="subject_id", suffixes=("", "_t"))
    m["d"] = np.hypot(m["x"] - m["x_t"], m["y"] - m["y_t"])
    hits = m[(m["d"] < 8) & (m["peak_snr"] > 15)].drop_duplicates(["classification_id", "x_t", "y_t"])
    views = data.classifications.merge(truth[truth["peak_snr"] > 15], on="subject_id")
    views = views.merge(data.volunteers[["volunteer", "user_name"]], on="volunteer")
    rate = (hits.groupby("user_name").size() / views.groupby("user_name").size()).fillna(0).rename("realised")
    both = vt.set_index("user_name").join(rate, how="inner")
    both = both[both.index.isin(views.groupby("user_name").size()[lambda s: s >= 40].index)]
    assert len(both) >= 20
    assert np.corrcoef(both["detection_rate"], both["realised"])[0, 1] > 0.85
    normal = both[both["kind"] == "normal"]
    assert abs(normal["realised"].mean() - normal["detection_rate"].mean()) < 0.08
    # spurious clicks: marks far from every clump, per classification, against the volunteers' true rates
    m["mark"] = m.groupby(["classification_id", "x", "y"]).ngroup()
    spurious = (m.groupby("mark")["d"].min() > 10).sum()
    cls = data.classifications.merge(data.volunteers[["volunteer", "user_name"]], on="volunteer")
    expected = cls["user_name"].map(vt.set_index("user_name")["false_positive_rate"]).sum()
    assert spurious / expected == pytest.approx(1.0, abs=0.15)


def test_perfect_volunteers_click_every_detectable_clump(tmp_path):
    out = tmp_path / "perfect"
    cfg = SimulationConfig(galaxies=30, volunteers_per_subject=5, seed=3, images=False, clumpy_fraction=1.0,
                           volunteer_model=VolunteerModelConfig.preset("perfect"))
    simulate_project(out, cfg)
    truth = pd.read_csv(out / "truth.csv")
    data = read_export(out / "classifications.csv")
    expected = int(truth["detectable"].sum()) * 5
    assert len(data.marks) == expected
    assert data.report.duplicates_dropped == 0


def test_simulate_volunteers_labels_new_subjects(project, tmp_path):
    out = tmp_path / "round2.csv"
    n = simulate_volunteer_export(project / "truth.csv", project / "subjects.csv", out,
                                  SimulationConfig(volunteers_per_subject=4, image_size=128, seed=9,
                                                   first_classification_id=900_000_000, images=False))
    data = read_export(out)
    assert n == len(pd.read_csv(out)) >= 8 * 4
    assert data.classifications["classification_id"].min() >= 900_000_000


def test_cli_simulate_and_bad_arguments(tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["simulate", "--out", str(out), "--galaxies", "3", "--image-size", "96",
                                  "--volunteers-per-subject", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "classifications.csv").exists() and len(list((out / "images").iterdir())) == 3
    bad = tmp_path / "bad"
    r = CliRunner().invoke(main, ["simulate", "--out", str(bad), "--galaxies", "0"])
    assert r.exit_code == 2 and "--galaxies must be at least 1" in r.output
    assert not bad.exists()
