"""Zooniverse's own retired state (a subjects export's ``retired_at``, per workflow) tells aggregate which galaxies
volunteers no longer see, whatever the workflow's retirement limit: such a galaxy is neither in progress (train
uses it), awaiting volunteers (select-next-batch may send it back) nor stalled."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.stopping import apply_stopping_rule
from clumptool.aggregation.subjects import RETIRED_COLUMN, workflow_retired

CLUMPS = [(120.0, 140.0), (260.0, 230.0)]


def _subjects_export(path, rows):
    """A Zooniverse subjects export: (subject_id, workflow_id, retired_at) rows."""
    pd.DataFrame([{"subject_id": sid, "project_id": 1, "workflow_id": wf, "subject_set_id": 5,
                   "metadata": json.dumps({"#fwhmImagePix": 3.0}), "locations": "{}", "classifications_count": 0,
                   "retired_at": retired, "retirement_reason": "classification_count" if retired else "",
                   "created_at": "2026-01-01", "updated_at": "2026-01-01"} for sid, wf, retired in rows]
                 ).to_csv(path, index=False)
    return path


def test_the_retired_state_is_read_for_the_aggregated_workflow_only(tmp_path):
    path = _subjects_export(tmp_path / "subjects.csv", [(1, 10, "2026-02-01 10:00:00 UTC"), (1, 11, ""),
                                                        (2, 10, ""), (3, 11, "2026-02-02")])
    assert workflow_retired(path, 10).to_dict() == {1: True, 2: False}
    assert workflow_retired(path, 11).to_dict() == {1: False, 3: True}
    pd.DataFrame({"subject_id": [1, 2]}).to_csv(tmp_path / "plain.csv", index=False)
    assert workflow_retired(tmp_path / "plain.csv", 10) is None  # not a Zooniverse subjects export


def test_a_retired_unfinished_galaxy_is_a_label_and_no_longer_awaits_volunteers():
    """Seven classifications, contested: under a limit of 20 it is in progress and awaits volunteers, unless the
    workflow retired it (a workflow that retires at 7, or by its own rule)."""
    subjects = pd.DataFrame({"subject_id": [1, 2], "n_viewers": [7, 7], "expected_num_false_neg": [0.9, 0.9],
                             RETIRED_COLUMN: [True, False]})
    clumps = pd.DataFrame({"subject_id": [1, 2], "n_marks": [7, 7], "n_viewers": [7, 7], "odd_vote": 0.0,
                           "label": 1, "accepted": True, "false_pos_prob": 0.001})
    out = apply_stopping_rule(subjects, clumps, retire_below=0.1, retirement_limit=20)
    assert not out["is_finished"].any() and not out["is_stalled"].any()
    assert out["in_progress"].tolist() == [False, True]
    assert out["awaiting_volunteers"].tolist() == [False, True]
    unknown = apply_stopping_rule(subjects.drop(columns=RETIRED_COLUMN), clumps, retire_below=0.1)
    assert unknown["in_progress"].all() and unknown["awaiting_volunteers"].all()


def test_aggregate_reads_the_retired_state_from_the_subjects_export(export_builder, tmp_path):
    rng = np.random.default_rng(0)
    for sid in (1, 2, 3):
        for v in range(4 if sid < 3 else 12):
            export_builder.add(sid, f"v{v}", [(float(x + rng.normal(0, 1)), float(y + rng.normal(0, 1)), 0)
                                              for x, y in CLUMPS[: 1 + (v % 2)]])  # the second clump: half the crowd
    wf = export_builder.workflow_id
    subjects = _subjects_export(tmp_path / "subjects.csv", [(1, wf, "2026-02-01"), (2, wf, ""), (3, wf, ""),
                                                            (2, wf + 1, "2026-02-01")])
    res = aggregate(export_builder.write(tmp_path / "e.csv"), subjects, options=AggregateOptions())
    s = res.subjects.set_index("subject_id")
    assert s[RETIRED_COLUMN].tolist() == [True, False, False]  # subject 2 is retired in another workflow only
    assert not s.loc[1, "is_finished"] and not s.loc[2, "is_finished"]
    assert s.loc[[1, 2], "in_progress"].tolist() == [False, True]
    assert s.loc[[1, 2], "awaiting_volunteers"].tolist() == [False, True]
    without = aggregate(tmp_path / "e.csv").subjects.set_index("subject_id")
    assert RETIRED_COLUMN not in without and without.loc[1, "in_progress"]


def test_a_stalled_galaxy_retired_as_stalled_stays_stalled_and_is_not_sent_back(export_builder, tmp_path):
    """retire --stalled retires galaxies more volunteers would not settle; once retired they must stay stalled, or
    select-next-batch --include-unfinished would send them back for the volunteers they do not need. Galaxy 3: 12
    volunteers mark both clumps, 4 of them a third spot (on the split); 30 unanimous galaxies teach the crowd."""
    rng = np.random.default_rng(5)
    for sid in range(100, 130):
        for v in range(12):
            export_builder.add(sid, f"v{v}", [(float(x + rng.normal(0, 1)), float(y + rng.normal(0, 1)), 0)
                                              for x, y in CLUMPS])
    for v in range(12):
        marks = [(float(x + rng.normal(0, 1)), float(y + rng.normal(0, 1)), 0) for x, y in CLUMPS]
        export_builder.add(3, f"v{v}", marks + ([(float(200 + rng.normal(0, 1)), float(60 + rng.normal(0, 1)), 0)]
                                                if v < 4 else []))
    wf = export_builder.workflow_id
    export = export_builder.write(tmp_path / "e.csv")
    before = aggregate(export).subjects.set_index("subject_id")
    assert before.loc[3, "is_stalled"] and not before.loc[3, "awaiting_volunteers"]
    subjects = _subjects_export(tmp_path / "subjects.csv", [(3, wf, "2026-02-01")] +
                                [(sid, wf, "") for sid in range(100, 130)])
    after = aggregate(export, subjects).subjects.set_index("subject_id")
    assert after.loc[3, RETIRED_COLUMN] and after.loc[3, "is_stalled"]  # retired as stalled: still stalled
    assert not after.loc[3, "awaiting_volunteers"] and not after.loc[3, "in_progress"]
    assert after.loc[3, "expected_gain"] == before.loc[3, "expected_gain"]


def test_a_galaxy_the_workflow_has_not_retired_is_still_shown_past_the_limit_given():
    """The workflow retires at 25, the user aggregated with the default 20: Zooniverse's word wins (still shown);
    a subject the subjects export does not list falls back on the limit."""
    subjects = pd.DataFrame({"subject_id": [1, 2], "n_viewers": [22, 22], "expected_num_false_neg": [0.9, 0.9],
                             RETIRED_COLUMN: pd.array([False, None], dtype="boolean")})
    clumps = pd.DataFrame({"subject_id": [1, 2], "n_marks": [22, 22], "n_viewers": [22, 22], "odd_vote": 0.0,
                           "label": 1, "accepted": True, "false_pos_prob": 0.001})
    out = apply_stopping_rule(subjects, clumps, retire_below=0.1, retirement_limit=20)
    assert out["awaiting_volunteers"].tolist() == [True, False]
