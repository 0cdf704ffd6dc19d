"""retire end to end: the real panoptes-client's ``Workflow.retire_subjects`` against the loopback fake.

Covers retiring the finished subjects only, an idempotent rerun, a fault half way then resume (an error
answer, and an answer lost after the server acted), the dry run, the --max cap, subjects the server does
not know, and tables that are not aggregate's subjects table.
"""

from __future__ import annotations

import pandas as pd
import pytest

from clumptool.active_learning.retire import (
    RetirementLedger,
    RetireOptions,
    read_subjects_table,
    retire_finished,
)
from clumptool.common.errors import ClumptoolError

WF = 5678
RETIRE = r"^/api/workflows/5678/retired_subjects$"


@pytest.fixture
def subjects(fake):
    """Eight subjects of workflow 5678 on the fake server."""
    return fake.add_linked_subjects(8)


def table(tmp_path, ids, finished, name="subjects.parquet"):
    df = pd.DataFrame({"subject_id": [int(i) for i in ids], "n_viewers": 7, "is_finished": finished,
                       "finished_reason": ["expected errors 0.02 < 0.1" if f else "expected errors 0.8 >= 0.1"
                                           for f in finished]})
    path = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def options(fake, tmp_path, **kw) -> RetireOptions:
    kw.setdefault("state", tmp_path / "state")
    return RetireOptions(workflow_id=WF, endpoint=fake.url, **kw)


def test_retires_only_finished_then_rerun_sends_nothing(fake, subjects, tmp_path):
    finished = [True, False, True, True, False, True, False, True]
    path = table(tmp_path, subjects, finished)
    report = retire_finished(path, options(fake, tmp_path, batch_size=2), progress=False)
    want = {s for s, f in zip(subjects, finished, strict=True) if f}
    assert report.retired_now == 5 and not report.unknown
    assert fake.state.retired(WF) == {s: "consensus" for s in want}
    posts = fake.state.requests_to("POST", RETIRE)
    assert len(posts) == 3 and all(p["body"]["retirement_reason"] == "consensus" for p in posts)
    assert {str(s) for p in posts for s in p["body"]["subject_ids"]} == want
    again = retire_finished(path, options(fake, tmp_path, batch_size=2), progress=False)
    assert again.retired_now == 0 and again.already_retired == 5
    assert len(fake.state.requests_to("POST", RETIRE)) == 3, "nothing is retired twice"


@pytest.mark.parametrize("fault", [dict(status=500), dict(drop=True, after=True)], ids=["error", "answer-lost"])
def test_fault_half_way_then_resume(fake, subjects, tmp_path, fault):
    path = table(tmp_path, subjects, [True] * 8)
    fake.state.add_fault("POST", RETIRE, nth=2, **fault)
    with pytest.raises(ClumptoolError, match="run the same command again to resume") as err:
        retire_finished(path, options(fake, tmp_path, batch_size=3), progress=False)
    assert "after 3 of 8" in str(err.value)
    ledger = RetirementLedger(tmp_path / "state" / "al_ledger.sqlite")
    states = ledger.retirement_states(WF)
    ledger.close()
    assert sorted(states.values()) == ["pending"] * 2 + ["retired"] * 3 + ["sending"] * 3
    report = retire_finished(path, options(fake, tmp_path, batch_size=3), progress=False)
    assert report.retired_now == 5 and report.already_retired == 3
    assert set(fake.state.retired(WF)) == set(subjects)
    sent = [s for p in fake.state.requests_to("POST", RETIRE) for s in p["body"]["subject_ids"]]
    assert sorted(sent) == sorted(subjects + subjects[3:6]), "only the unconfirmed batch is sent again"


def test_dry_run_sends_nothing_and_writes_no_ledger(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, [True, False] * 4, name="subjects.csv")
    report = retire_finished(path, options(fake, tmp_path, dry_run=True), progress=False)
    assert report.to_retire == subjects[0::2]
    text = report.format()
    assert "dry run: 4 subjects would be retired" in text and subjects[0] in text and "0.02 < 0.1" in text
    assert not fake.state.requests and not (tmp_path / "state").exists()


def test_max_cap(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, [True] * 8)
    with pytest.raises(ClumptoolError, match="more than --max 5") as err:
        retire_finished(path, options(fake, tmp_path, max_subjects=5), progress=False)
    assert "--partial" in str(err.value) and not fake.state.requests
    report = retire_finished(path, options(fake, tmp_path, max_subjects=5, partial=True), progress=False)
    assert report.retired_now == 5 and report.left_for_later == 3
    report = retire_finished(path, options(fake, tmp_path, max_subjects=5), progress=False)
    assert report.retired_now == 3 and set(fake.state.retired(WF)) == set(subjects)


def test_unknown_subjects_are_reported_not_retired(fake, subjects, tmp_path):
    other = fake.add_linked_subjects(1, workflow_id=5678)[0]
    fake.state.workflows["5678"]["links"]["subject_sets"].pop()  # its set is no longer linked
    path = table(tmp_path, [*subjects[:2], other, 987654321], [True] * 4)
    report = retire_finished(path, options(fake, tmp_path), progress=False)
    assert report.retired_now == 2 and report.unknown == [other, "987654321"]
    assert "not subjects of this workflow" in report.format()
    assert set(fake.state.retired(WF)) == set(subjects[:2])


def test_unfinished_never_retired_and_bad_tables(tmp_path):
    path = table(tmp_path, [11, 12, 13], [True, False, None], name="t.csv")
    read = read_subjects_table(path)
    assert list(read.finished) == ["11"] and read.unfinished == 2 and read.stalled is None
    pd.DataFrame({"subject_id": [11, 11], "is_finished": [True, False]}).to_csv(tmp_path / "dup.csv", index=False)
    read = read_subjects_table(tmp_path / "dup.csv")
    assert (read.finished, read.unfinished) == ({}, 1), "finished only if every row says so"
    pd.DataFrame({"subject_id": [11], "is_finished": ["maybe"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"bad\.csv.*subject_id 11.*is_finished.*not true or false"):
        read_subjects_table(tmp_path / "bad.csv")
    pd.DataFrame({"subject_id": [11], "n_clumps": [1]}).to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"old\.csv: no is_finished column"):
        read_subjects_table(tmp_path / "old.csv")
