"""A galaxy sent back to Zooniverse as a new subject is aggregated as one galaxy: the classifications of its
earlier subject and of the new (downscaled) one form one consensus under the newest subject, a volunteer who
saw it twice counts once, and the stopping rule gives the new subject the retirement limit afresh."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from clumptool.aggregation.export import ReadOptions
from clumptool.aggregation.galaxies import (
    EARLIER_SUBJECTS_COLUMN,
    EARLIER_VIEWERS_COLUMN,
    galaxy_ids_in_subject_data,
    newest_subject_of_galaxy,
)
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.replay import queue_rank, replay_export
from clumptool.aggregation.stopping import apply_stopping_rule
from clumptool.cli import main
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.project import simulate_project
from clumptool.simulation.uploaded import UploadedSubject, classifications_of_uploaded

NEW = 99_000_001  # the galaxy's subject when sent back (Zooniverse ids grow)
FIRST = 8  # classifications under the galaxy's first subject


def test_subjects_of_one_galaxy_map_to_its_newest_and_lone_subjects_to_nothing():
    data = {5: '{"5":{"retired":null}}', 9: '{"9":{"#galaxy_id":"5"}}', 7: '{"7":{"galaxy_id":"g1"}}',
            8: '{"8":{"!galaxy_id":"g1","x":1}}', 3: '{"3":{"#galaxy_id":"c3"}}', 4: "not json galaxy_id"}
    galaxy_of = galaxy_ids_in_subject_data(np.array(list(data)), list(data.values()))
    assert galaxy_of == {9: "5", 7: "g1", 8: "g1", 3: "c3"}
    newest = newest_subject_of_galaxy(np.array([5, 9, 7, 8, 3, 4, 9]), galaxy_of)
    assert newest.to_dict() == {5: 9, 9: 9, 7: 8, 8: 8}  # 3 and 4 are their galaxies' only subjects
    assert newest_subject_of_galaxy(np.array([5, 7]), galaxy_of).empty


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("galaxies")
    cfg = SimulationConfig(galaxies=30, volunteers_per_subject=20, seed=4, images=False, clumpy_fraction=1.0)
    simulate_project(root / "sim", cfg)
    export = pd.read_csv(root / "sim" / "classifications.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(root / "sim" / "truth.csv")
    galaxy = int(truth.groupby("subject_id").size().idxmax())  # the clumpiest galaxy
    size = cfg.image_size
    of_galaxy = (export["subject_ids"] == str(galaxy)).to_numpy()
    rank = queue_rank(export)
    later = export[of_galaxy & (rank >= FIRST)]
    sent_back = classifications_of_uploaded(later, [UploadedSubject(
        subject_id=NEW, galaxy_id=galaxy, width=size // 2, height=size // 2,
        metadata={"#galaxy_id": str(galaxy), "#cutout_scale": 0.5})])
    split = pd.concat([export[~of_galaxy | (rank < FIRST)], sent_back], ignore_index=True)
    paths = {"whole": root / "sim" / "classifications.csv", "split": root / "split.csv"}
    split.to_csv(paths["split"], index=False)
    # the same, with one volunteer of the first subject among the new subject's classifications
    first_user = export[of_galaxy & (rank == 0)].iloc[0]
    repeat = split.copy()
    row = repeat.index[repeat["subject_ids"] == str(NEW)][0]
    repeat.loc[row, ["user_name", "user_id"]] = first_user[["user_name", "user_id"]].to_numpy()
    paths["repeat"] = root / "repeat.csv"
    repeat.to_csv(paths["repeat"], index=False)
    # a subjects export that lists both subjects of the galaxy
    subjects = pd.read_csv(root / "sim" / "subjects.csv", dtype=str, keep_default_na=False)
    new_row = subjects[subjects["subject_id"] == str(galaxy)].copy()
    new_row["subject_id"] = str(NEW)
    new_row["metadata"] = json.dumps({**json.loads(new_row["metadata"].iloc[0]), "#galaxy_id": str(galaxy),
                                      "#cutout_scale": 0.5})
    paths["subjects"] = root / "subjects.csv"
    pd.concat([subjects, new_row]).to_csv(paths["subjects"], index=False)
    return galaxy, paths


def _accepted(result, sid):
    c = result.clumps
    return c[(c["subject_id"] == sid) & c["accepted"]].sort_values(["x", "y"]).reset_index(drop=True)


def test_a_galaxy_sent_back_is_one_consensus_under_its_newest_subject(project):
    galaxy, paths = project
    whole = aggregate(paths["whole"])
    split = aggregate(paths["split"])
    s = split.subjects.set_index("subject_id")
    assert galaxy not in s.index
    assert s.loc[NEW, "n_viewers"] == 20
    assert s.loc[NEW, EARLIER_VIEWERS_COLUMN] == FIRST and s.loc[NEW, EARLIER_SUBJECTS_COLUMN] == str(galaxy)
    assert (s.drop(index=NEW)[EARLIER_VIEWERS_COLUMN] == 0).all()
    assert (s.drop(index=NEW)[EARLIER_SUBJECTS_COLUMN] == "").all()
    assert split.summary["export"]["subjects_merged_into_their_galaxy"] == 1
    # the consensus of the whole crowd, in the original image's pixels (the new subject's marks were made on a
    # half-size cutout)
    a, b = _accepted(whole, galaxy), _accepted(split, NEW)
    assert len(a) == len(b) >= 3
    assert np.allclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy(), atol=0.05)
    assert np.allclose(a["false_pos_prob"], b["false_pos_prob"], atol=1e-3)
    assert split.boxes["subject_id"].isin([galaxy]).sum() == 0
    assert (split.boxes["subject_id"] == NEW).sum() == (whole.boxes["subject_id"] == galaxy).sum()


def test_kept_apart_on_request_each_subject_has_its_own_crowd(project):
    galaxy, paths = project
    apart = aggregate(paths["split"], options=AggregateOptions(read=ReadOptions(merge_galaxies=False)))
    s = apart.subjects.set_index("subject_id")
    assert s.loc[galaxy, "n_viewers"] == FIRST and s.loc[NEW, "n_viewers"] == 20 - FIRST
    assert apart.summary["export"]["subjects_merged_into_their_galaxy"] == 0


def test_a_volunteer_who_saw_the_galaxy_under_both_subjects_counts_once(project):
    galaxy, paths = project
    res = aggregate(paths["repeat"])
    assert res.subjects.set_index("subject_id").loc[NEW, "n_viewers"] == 19
    assert res.summary["export"]["galaxy_repeats_dropped"] == 1
    assert res.summary["export"]["duplicates_dropped"] == aggregate(paths["split"]).summary["export"][
        "duplicates_dropped"]  # the simulator's own repeats of one subject, counted apart


def test_the_earlier_subject_of_a_subjects_export_is_not_listed_as_unclassified(project):
    galaxy, paths = project
    res = aggregate(paths["split"], paths["subjects"])
    assert res.summary["subjects_without_classifications"] == 0
    s = res.subjects.set_index("subject_id")
    assert galaxy not in s.index and s.loc[NEW, "galaxy_id"] in (galaxy, str(galaxy))


def test_detections_on_the_earlier_subject_annotate_the_galaxy(project, tmp_path):
    galaxy, paths = project
    truth = pd.read_csv(paths["whole"].parent / "truth.csv")
    det = truth[truth["subject_id"] == galaxy][["subject_id", "x", "y"]].assign(score=0.9, label=1)
    det.to_csv(tmp_path / "catalogue.csv", index=False)
    res = aggregate(paths["split"], detections=tmp_path / "catalogue.csv")
    clumps = res.clumps[res.clumps["subject_id"] == NEW]
    assert clumps["n_machine_marks"].sum() == len(det)  # each detection joined the galaxy's consensus
    assert res.summary["fit"]["detector"]["detections_outside_export"] == 0


def test_a_galaxy_sent_back_has_the_retirement_limit_afresh():
    """Retired unfinished at 20 and sent back, with 5 more so far: Zooniverse still shows the new subject, so
    the galaxy awaits volunteers (not uploaded again), and stalling counts the 15 it can still get."""
    subjects = pd.DataFrame({"subject_id": [1, 2], "n_viewers": [25, 25], "expected_num_false_neg": [0.9, 0.9],
                             EARLIER_VIEWERS_COLUMN: [20, 0]})
    clumps = pd.DataFrame({"subject_id": [1, 2], "n_marks": [25, 25], "n_viewers": [25, 25], "odd_vote": 0.0,
                           "label": 1, "accepted": True, "false_pos_prob": 0.001})
    out = apply_stopping_rule(subjects, clumps, retire_below=0.1, retirement_limit=20)
    assert not out["is_finished"].any()
    assert out["awaiting_volunteers"].tolist() == [True, False]
    assert out["expected_gain"].iloc[0] > 0.5 > out["expected_gain"].iloc[1]


def test_the_cli_merges_by_default_says_so_and_keeps_subjects_apart_with_per_subject(project, tmp_path):
    galaxy, paths = project
    r = CliRunner().invoke(main, ["aggregate", str(paths["split"]), "--out", str(tmp_path / "merged")])
    assert r.exit_code == 0, r.output
    assert "1 earlier subjects of galaxies sent back to Zooniverse (#galaxy_id) aggregated with" in r.output
    merged = pd.read_parquet(tmp_path / "merged" / "subjects.parquet").set_index("subject_id")
    assert galaxy not in merged.index and merged.loc[NEW, EARLIER_SUBJECTS_COLUMN] == str(galaxy)
    r = CliRunner().invoke(main, ["aggregate", str(paths["split"]), "--per-subject", "--out", str(tmp_path / "apart")])
    assert r.exit_code == 0, r.output
    apart = pd.read_parquet(tmp_path / "apart" / "subjects.parquet").set_index("subject_id")
    assert apart.loc[[galaxy, NEW], "n_viewers"].tolist() == [FIRST, 20 - FIRST]


def test_the_replay_queues_a_galaxy_sent_back_as_one(project, tmp_path):
    """replay (the demo's 'would have saved'): the galaxy's 8 + 12 classifications are one queue of 20 under the
    newest subject, as aggregate merges them; the cap stays the most one subject had."""
    galaxy, paths = project
    cls = pd.read_csv(paths["split"], dtype=str, keep_default_na=False)
    r = replay_export(cls, tmp=tmp_path)
    assert galaxy not in r.available.index and r.available[NEW] == 20
    assert r.cap == cls["subject_ids"].value_counts().max() < 20 + 12  # one subject's most (a simulated repeat: 21)
    assert r.used[NEW] <= 20 and len(r.available) == 30
