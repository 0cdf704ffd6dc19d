"""Each simulated crowd does what its parameters say: measured on the export a consensus would read."""

import json

import numpy as np
import pandas as pd
import pytest
from folder_digest import folder_digest
from PIL import Image

from clumptool.common.errors import ClumptoolError
from clumptool.simulation.config import CROWDS, CrowdConfig, SimulationConfig
from clumptool.simulation.project import simulate_project

STATS = dict(galaxies=300, seed=4, images=False, clumpy_fraction=1.0)
_built: dict[str, object] = {}


@pytest.fixture(scope="module")
def crowd_project(tmp_path_factory):
    """Project of a crowd (300 galaxies, no images), built once per module and crowd."""

    def build(name: str):
        if name not in _built:
            out = tmp_path_factory.mktemp(f"crowd-{name}") / "p"
            simulate_project(out, SimulationConfig(**STATS, crowd=CrowdConfig.preset(name)))
            _built[name] = out
        return _built[name]

    yield build
    _built.clear()


def raw_marks(project) -> pd.DataFrame:
    """Every mark of classifications.csv (both front ends) with its classification, subject and volunteer."""
    cls = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    rows = []
    for cid, user, sid, ann in zip(cls["classification_id"], cls["user_name"], cls["subject_ids"],
                                   cls["annotations"], strict=True):
        for task in json.loads(ann):
            if task["task"] == "T1":
                for m in task["value"]:
                    rows.append((int(cid), user, int(sid), m["x"], m["y"], m.get("tool", m.get("toolIndex"))))
    return pd.DataFrame(rows, columns=["classification_id", "user_name", "subject_id", "x", "y", "tool"])




@pytest.mark.parametrize("name", CROWDS)
def test_each_crowd_same_seed_same_bytes_and_documented(name, tmp_path):
    cfg = SimulationConfig(galaxies=6, image_size=64, seed=2, workers=1, crowd=CrowdConfig.preset(name))
    simulate_project(tmp_path / "a", cfg)
    simulate_project(tmp_path / "b", cfg)
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    readme = (tmp_path / "a" / "README.txt").read_text()
    assert f"Crowd: {name}:" in readme and "objects.csv" in readme and "marks_truth.csv" in readme
    objects = pd.read_csv(tmp_path / "a" / "objects.csv")
    assert (objects["kind"] == "bulge").sum() == 6  # one centre per galaxy


def test_unknown_crowd_names_the_option():
    with pytest.raises(ClumptoolError, match="--crowd 'crowdy'.*default, bulge, distractor, sparse, confusion"):
        CrowdConfig.preset("crowdy")
    with pytest.raises(ClumptoolError, match="fractions and rates"):
        CrowdConfig(name="bulge", bulge_fraction=1.5)


def test_bulge_crowd_is_the_default_crowd_plus_bulge_marks(crowd_project):
    base = pd.read_csv(crowd_project("default") / "marks_truth.csv")
    bulge = pd.read_csv(crowd_project("bulge") / "marks_truth.csv")
    extra = bulge["target"].isin(["bulge", "companion_centre"])
    key = ["subject_id", "user_name", "x", "y", "tool", "target", "object_id"]
    a = base[key].sort_values(key).reset_index(drop=True)
    b = bulge.loc[~extra, key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert extra.sum() > 500


def test_bulge_crowd_marks_the_centre_as_often_as_set(crowd_project):
    """Extra marks within 6 px of the centre (bulge crowd minus default) = sum of bulge rates x P(within)."""
    radius = 6.0
    counts = {}
    for name in ("default", "bulge"):
        m = raw_marks(crowd_project(name))
        counts[name] = int((np.hypot(m["x"] - 200, m["y"] - 200) <= radius).sum())
    project = crowd_project("bulge")
    vt = pd.read_csv(project / "volunteers_truth.csv").set_index("user_name")
    cls = pd.read_csv(project / "classifications.csv", usecols=["user_name", "subject_ids"], keep_default_na=False)
    bulges = pd.read_csv(project / "objects.csv").query("kind == 'bulge'").set_index("subject_id")
    sd = np.hypot(vt.loc[cls["user_name"], "scatter_px"].to_numpy(),
                  0.3 * bulges.loc[cls["subject_ids"].astype(int), "size_px"].to_numpy())
    rate = vt.loc[cls["user_name"], "bulge_rate"].to_numpy()
    expected = float(np.sum(rate * (1 - np.exp(-radius**2 / (2 * sd**2)))))
    assert (vt["bulge_rate"] > 0).mean() == pytest.approx(0.3, abs=0.06)
    assert counts["bulge"] - counts["default"] == pytest.approx(expected, rel=0.08)
    # and the share of classifications that mark the centre is a sizeable minority, as in Clump Scout
    assert 0.12 < expected / len(cls) < 0.3


def test_bulge_clickers_also_mark_bright_companions_centres(crowd_project):
    project = crowd_project("bulge")
    mt = pd.read_csv(project / "marks_truth.csv")
    objects = pd.read_csv(project / "objects.csv")
    vt = pd.read_csv(project / "volunteers_truth.csv").set_index("user_name")
    bright = objects[(objects["kind"] == "companion") & (objects["brightness"] >= 15)]
    cls = pd.read_csv(project / "classifications.csv", usecols=["user_name", "subject_ids"], keep_default_na=False)
    clickers = cls[vt.loc[cls["user_name"], "bulge_rate"].to_numpy() > 0]
    chances = clickers["subject_ids"].astype(int).map(bright.groupby("subject_id").size()).fillna(0).sum()
    marks = mt[mt["target"] == "companion_centre"]
    assert chances > 50
    assert len(marks) / chances == pytest.approx(0.3, abs=0.07)
    centre = marks.merge(objects, on=["subject_id", "object_id"], suffixes=("", "_o"))
    assert np.median(np.hypot(centre["x"] - centre["x_o"], centre["y"] - centre["y_o"])) < 5


def test_distractor_crowd_rates_and_consistency_as_set(crowd_project):
    project = crowd_project("distractor")
    vt = pd.read_csv(project / "volunteers_truth.csv")
    mt = pd.read_csv(project / "marks_truth.csv")
    objects = pd.read_csv(project / "objects.csv")
    d = vt[vt["kind"] == "distractor"].set_index("user_name")
    assert len(d) / len(vt) == pytest.approx(0.2, abs=0.05)
    assert d["distractor_rate"].mean() == pytest.approx(0.6, abs=0.06)
    assert d["distractor_consistency"].mean() == pytest.approx(0.8, abs=0.05)
    assert (vt.loc[vt["kind"] != "distractor", "distractor_rate"] == 0).all()
    # per volunteer: marks on stars and companions per (classification, such object) = rate x consistency
    salient = objects[objects["kind"].isin(["star", "companion"])].groupby("subject_id").size()
    cls = pd.read_csv(project / "classifications.csv", usecols=["user_name", "subject_ids"], keep_default_na=False)
    chances = cls.assign(n=cls["subject_ids"].astype(int).map(salient).fillna(0)).groupby("user_name")["n"].sum()
    on = mt[mt["target"].isin(["star", "companion"]) & mt["user_name"].isin(d.index)]
    # (the default behaviour's spurious clicks on stars, ~0.06 per classification, are counted too: small)
    realised = on.groupby("user_name").size().reindex(d.index).fillna(0) / chances.reindex(d.index)
    expected = d["distractor_rate"] * d["distractor_consistency"]
    keep = chances.reindex(d.index) >= 40
    assert keep.sum() >= 5
    assert np.corrcoef(realised[keep], expected[keep])[0, 1] > 0.8
    assert realised[keep].mean() == pytest.approx(expected[keep].mean(), rel=0.2)
    # noise peaks are marked at half the consistency of stars
    peaks = mt[mt["target"] == "noise_peak"]
    assert len(peaks) > 20
    assert objects["kind"].eq("noise_peak").sum() / 300 == pytest.approx(1.5, abs=0.25)


def test_distractor_clicks_land_on_rendered_objects(tmp_path):
    out = tmp_path / "img"
    simulate_project(out, SimulationConfig(galaxies=16, image_size=200, seed=7, workers=1, volunteers_per_subject=20,
                                           crowd=CrowdConfig.preset("distractor")))
    mt = pd.read_csv(out / "marks_truth.csv")
    objects = pd.read_csv(out / "objects.csv")
    clicked = mt[mt["target"].isin(["star", "companion", "noise_peak"])]
    assert clicked["target"].nunique() == 3
    per_obj = clicked.groupby(["subject_id", "object_id"])[["x", "y"]].mean().join(
        objects.set_index(["subject_id", "object_id"]), rsuffix="_o")
    assert np.median(np.hypot(per_obj["x"] - per_obj["x_o"], per_obj["y"] - per_obj["y_o"])) < 3
    brighter = []
    for (sid, _), o in per_obj.iterrows():
        img = np.asarray(Image.open(out / "images" / f"{sid}.png").convert("L"), float)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        d = np.hypot(xx + 0.5 - o["x_o"], yy + 0.5 - o["y_o"])
        centre = img[d <= 1.5].mean()
        ring = np.median(img[(d > 3 * o["size_px"]) & (d < 5 * o["size_px"])]) if o["kind"] != "companion" \
            else np.median(img[(d > 2.5 * o["size_px"]) & (d < 4 * o["size_px"])])
        brighter.append(centre > ring)
    assert len(brighter) >= 8
    assert np.mean(brighter) >= 0.9


def test_sparse_crowd_has_6_to_10_volunteers_per_subject(crowd_project):
    project = crowd_project("sparse")
    cls = pd.read_csv(project / "classifications.csv", usecols=["user_name", "subject_ids"], keep_default_na=False)
    per_subject = cls.drop_duplicates().groupby("subject_ids").size()
    assert per_subject.min() == 6 and per_subject.max() == 10
    assert set(per_subject.unique()) == set(range(6, 11))
    assert per_subject.mean() == pytest.approx(8, abs=0.4)
    subjects = pd.read_csv(project / "subjects.csv")
    assert (subjects.set_index("subject_id")["classifications_count"]
            == per_subject.rename(index=int).reindex(subjects["subject_id"]).to_numpy()).all()


def test_sparse_crowd_refuses_a_fixed_volunteer_count():
    with pytest.raises(ClumptoolError, match="--volunteers-per-subject.*--crowd sparse"):
        SimulationConfig(volunteers_per_subject=8, crowd=CrowdConfig.preset("sparse"))


def test_confusion_crowd_swaps_tools_and_shifts_marks_as_set(crowd_project):
    project = crowd_project("confusion")
    vt = pd.read_csv(project / "volunteers_truth.csv").set_index("user_name")
    truth = pd.read_csv(project / "truth.csv")
    mt = pd.read_csv(project / "marks_truth.csv")
    clump = mt[mt["target"] == "clump"].merge(truth[["subject_id", "clump_id", "x", "y", "label"]],
                                              left_on=["subject_id", "object_id"],
                                              right_on=["subject_id", "clump_id"], suffixes=("", "_t"))
    swapped = clump["tool"] != clump["label"] - 1
    assert vt["tool_confusion"].mean() == pytest.approx(0.4, abs=0.04)
    assert swapped.mean() == pytest.approx(vt.loc[clump["user_name"], "tool_confusion"].mean(), abs=0.02)
    length = np.hypot(vt["offset_x"], vt["offset_y"])
    assert length.min() >= 1.5 - 1e-9 and length.max() <= 4.0 + 1e-9
    shift = clump.assign(dx=clump["x"] - clump["x_t"], dy=clump["y"] - clump["y_t"]).groupby("user_name")
    est = shift[["dx", "dy"]].median()[shift.size() >= 40]
    assert len(est) >= 20
    true = vt.loc[est.index, ["offset_x", "offset_y"]].to_numpy()
    assert np.corrcoef(est["dx"], true[:, 0])[0, 1] > 0.9
    assert np.median(np.hypot(est["dx"] - true[:, 0], est["dy"] - true[:, 1])) < 0.8
    # the default crowd has no offsets
    base = pd.read_csv(crowd_project("default") / "volunteers_truth.csv")
    assert (base[["offset_x", "offset_y"]] == 0).all().all()
