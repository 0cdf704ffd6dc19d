"""retire end to end: the real panoptes-client's ``Workflow.retire_subjects`` against the loopback fake.

Covers retiring the finished subjects only, an idempotent rerun, a fault half way then resume (an error
answer, and an answer lost after the server acted), the dry run, the --max cap, subjects the server does
not know, and tables that are not aggregate's subjects table; with --stalled, the stalled subjects too
(reason 'other', each request one reason), never without it, and a ledger from before --stalled.
"""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from click.testing import CliRunner

from clumptool.active_learning.retire import (
    RetirementLedger,
    RetireOptions,
    read_subjects_table,
    retire_finished,
)
from clumptool.cli import main
from clumptool.common.errors import ClumptoolError

WF = 5678
RETIRE = r"^/api/workflows/5678/retired_subjects$"


@pytest.fixture
def subjects(fake):
    """Eight subjects of workflow 5678 on the fake server."""
    return fake.add_linked_subjects(8)


def table(tmp_path, ids, finished, name="subjects.parquet", stalled=None):
    """aggregate's subjects table; ``stalled`` None: one without an is_stalled column."""
    reasons = ["expected errors 0.02 < 0.1" if f else "expected errors 0.8 >= 0.1" for f in finished]
    df = pd.DataFrame({"subject_id": [int(i) for i in ids], "n_viewers": 7, "is_finished": finished,
                       "finished_reason": reasons})
    if stalled is not None:
        df["is_stalled"] = stalled
        df["finished_reason"] = ["stalled: labels split 4-3" if s else r for s, r in zip(stalled, reasons, strict=True)]
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


@pytest.mark.parametrize("stalled", [False, True], ids=["finished", "finished+stalled"])
@pytest.mark.parametrize("fault", [dict(status=500), dict(drop=True, after=True)], ids=["error", "answer-lost"])
def test_fault_half_way_then_resume(fake, subjects, tmp_path, fault, stalled):
    """Batches of 3: consensus [0-2] [3-5], then (stalled: the last two are stalled) [6-7]; the 2nd fails."""
    path = table(tmp_path, subjects, [True] * 6 + [not stalled] * 2, stalled=[False] * 6 + [stalled] * 2)
    fake.state.add_fault("POST", RETIRE, nth=2, **fault)
    with pytest.raises(ClumptoolError, match="run the same command again to resume") as err:
        retire_finished(path, options(fake, tmp_path, batch_size=3, stalled=stalled), progress=False)
    assert "after 3 of 8" in str(err.value)
    ledger = RetirementLedger(tmp_path / "state" / "al_ledger.sqlite")
    states = ledger.retirement_states(WF)
    ledger.close()
    assert sorted(states.values()) == ["pending"] * 2 + ["retired"] * 3 + ["sending"] * 3
    report = retire_finished(path, options(fake, tmp_path, batch_size=3, stalled=stalled), progress=False)
    assert report.retired_now == 5 and report.already_retired == 3
    last = "other" if stalled else "consensus"
    assert fake.state.retired(WF) == {**dict.fromkeys(subjects[:6], "consensus"), **dict.fromkeys(subjects[6:], last)}
    posts = fake.state.requests_to("POST", RETIRE)
    assert [p["body"]["retirement_reason"] for p in posts] == ["consensus"] * 3 + [last]
    sent = [s for p in posts for s in p["body"]["subject_ids"]]
    assert sorted(sent) == sorted(subjects + subjects[3:6]), "only the unconfirmed batch is sent again"


STALLED = [False, True, False, True, False, False, False, True]
FINISHED = [True, False, True, False, False, True, False, False]


def test_stalled_never_sent_without_flag_then_other_with_it(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, FINISHED, stalled=STALLED)
    finished = [s for s, f in zip(subjects, FINISHED, strict=True) if f]
    stalled = [s for s, f in zip(subjects, STALLED, strict=True) if f]
    report = retire_finished(path, options(fake, tmp_path), progress=False)
    assert report.retired_now == 3 and report.stalled == 3 and report.unfinished == 5
    assert fake.state.retired(WF) == dict.fromkeys(finished, "consensus"), "stalled subjects are never sent"
    assert "3 stalled subjects are not retired (add --stalled" in report.format()
    report = retire_finished(path, options(fake, tmp_path, stalled=True, batch_size=2), progress=False)
    assert report.retired_by_reason == {"consensus": 0, "other": 3} and report.already_retired == 3
    assert fake.state.retired(WF) == {**dict.fromkeys(finished, "consensus"), **dict.fromkeys(stalled, "other")}
    posts = fake.state.requests_to("POST", RETIRE)[1:]
    assert [(p["body"]["retirement_reason"], len(p["body"]["subject_ids"])) for p in posts] == [("other", 2),
                                                                                                ("other", 1)]
    assert "retired 0 subjects now (reason 'consensus') and 3 stalled (reason 'other')" in report.format()
    again = retire_finished(path, options(fake, tmp_path, stalled=True), progress=False)
    assert again.retired_now == 0 and again.already_by_reason == {"consensus": 3, "other": 3}
    assert "6 already retired by earlier runs (3 'consensus', 3 'other')" in again.format()
    assert len(fake.state.requests_to("POST", RETIRE)) == 3, "nothing is retired twice"


def test_stalled_and_finished_in_one_run_one_reason_per_request(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, FINISHED, stalled=STALLED)
    report = retire_finished(path, options(fake, tmp_path, stalled=True, batch_size=2), progress=False)
    assert "retired 3 subjects now (reason 'consensus') and 3 stalled (reason 'other')" in report.format()
    posts = [(p["body"]["retirement_reason"], p["body"]["subject_ids"]) for p in fake.state.requests_to("POST", RETIRE)]
    want = {s: "other" if st else "consensus" for s, f, st in zip(subjects, FINISHED, STALLED, strict=True) if f or st}
    assert [r for r, _ in posts] == ["consensus", "consensus", "other", "other"]
    assert {str(s): r for r, ids in posts for s in ids} == want == fake.state.retired(WF)
    ledger = RetirementLedger(tmp_path / "state" / "al_ledger.sqlite")
    assert ledger.retirement_reasons(WF) == want
    ledger.close()


def test_retired_with_one_reason_is_not_sent_again_with_the_other(fake, subjects, tmp_path):
    first = table(tmp_path, subjects[:2], [False, True], stalled=[True, False], name="round1.parquet")
    retire_finished(first, options(fake, tmp_path, stalled=True), progress=False)
    swapped = table(tmp_path, subjects[:2], [True, False], stalled=[False, True], name="round2.parquet")
    report = retire_finished(swapped, options(fake, tmp_path, stalled=True), progress=False)
    assert report.retired_now == 0 and report.reason_changed == 2 and report.no_longer_finished == 0
    assert "2 subjects retired by earlier runs with another reason" in report.format()
    assert fake.state.retired(WF) == {subjects[0]: "other", subjects[1]: "consensus"}, "the first reason stays"
    assert len(fake.state.requests_to("POST", RETIRE)) == 2


def test_resume_after_the_table_changed_keeps_what_the_server_may_have(fake, subjects, tmp_path):
    """Run 1 (batches of 1): A retired, B's answer lost (the server retired it, 'other'), C never sent; then
    B and C are finished: B is sent again with 'other' (what the server may hold), C with 'consensus'."""
    a, b, c = subjects[:3]
    first = table(tmp_path, [a, b, c], [True, False, False], stalled=[False, True, True], name="round1.parquet")
    fake.state.add_fault("POST", RETIRE, nth=2, drop=True, after=True)
    with pytest.raises(ClumptoolError, match="after 1 of 3"):
        retire_finished(first, options(fake, tmp_path, stalled=True, batch_size=1), progress=False)
    now = table(tmp_path, [a, b, c], [True] * 3, stalled=[False] * 3, name="round2.parquet")
    report = retire_finished(now, options(fake, tmp_path, batch_size=1), progress=False)
    assert report.retired_now == 2 and report.already_retired == 1
    posts = [(p["body"]["retirement_reason"], p["body"]["subject_ids"]) for p in fake.state.requests_to("POST", RETIRE)]
    assert posts[2:] == [("consensus", [c]), ("other", [b])]
    ledger = RetirementLedger(tmp_path / "state")
    assert ledger.retirement_reasons(WF) == fake.state.retired(WF) == {a: "consensus", b: "other", c: "consensus"}
    ledger.close()


def test_ledger_from_before_stalled_still_opens(fake, subjects, tmp_path):
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "al_ledger.sqlite") as db:  # the retirements table as it was
        db.execute("CREATE TABLE retirements (workflow_id TEXT NOT NULL, subject_id TEXT NOT NULL, state TEXT NOT "
                   "NULL, finished_reason TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT "
                   "NOT NULL, PRIMARY KEY (workflow_id, subject_id))")
        db.execute("INSERT INTO retirements VALUES (?, ?, 'retired', 'old', NULL, 1, 'then')", (str(WF), subjects[0]))
    db.close()
    path = table(tmp_path, subjects[:3], [True, False, False], stalled=[False, True, False])
    report = retire_finished(path, options(fake, tmp_path, stalled=True), progress=False)
    assert report.already_by_reason["consensus"] == 1 and report.retired_by_reason == {"consensus": 0, "other": 1}
    assert fake.state.retired(WF) == {subjects[1]: "other"}
    ledger = RetirementLedger(tmp_path / "state")
    assert ledger.retirement_reasons(WF) == {subjects[0]: "consensus", subjects[1]: "other"}
    ledger.close()


def test_stalled_without_is_stalled_column_is_refused_before_anything_is_sent(fake, subjects, tmp_path):
    path = table(tmp_path, subjects[:4], [True, False, True, False])
    with pytest.raises(ClumptoolError, match="--stalled: .* has no is_stalled column .* drop --stalled"):
        retire_finished(path, options(fake, tmp_path, stalled=True), progress=False)
    assert not fake.state.requests and not (tmp_path / "state").exists()
    report = retire_finished(path, options(fake, tmp_path), progress=False)
    assert report.stalled is None and fake.state.retired(WF) == dict.fromkeys(subjects[0:4:2], "consensus")


@pytest.mark.parametrize("stalled", [False, True], ids=["finished", "finished+stalled"])
def test_dry_run_sends_nothing_and_writes_no_ledger(fake, subjects, tmp_path, stalled):
    path = table(tmp_path, subjects, [True, False] * 4, name="subjects.csv", stalled=[False, True, False, False] * 2)
    report = retire_finished(path, options(fake, tmp_path, dry_run=True, stalled=stalled), progress=False)
    assert report.to_retire == subjects[0::2] + (subjects[1::4] if stalled else [])
    text = report.format()
    assert "dry run: 6 subjects would be retired, 4 with reason 'consensus' and 2 stalled with reason 'other'" in text \
        if stalled else "dry run: 4 subjects would be retired, 4 with reason 'consensus' (" in text
    assert f"  {subjects[0]}  consensus  expected errors 0.02 < 0.1" in text
    assert (f"  {subjects[1]}  other      stalled: labels split 4-3" in text) == stalled
    assert not fake.state.requests and not (tmp_path / "state").exists()


def test_max_counts_both_kinds(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, FINISHED, stalled=STALLED)
    with pytest.raises(ClumptoolError, match="6 finished or stalled subjects .* more than --max 5"):
        retire_finished(path, options(fake, tmp_path, max_subjects=5, stalled=True), progress=False)
    report = retire_finished(path, options(fake, tmp_path, max_subjects=5, stalled=True, partial=True), progress=False)
    assert report.retired_by_reason == {"consensus": 3, "other": 2} and report.left_for_later == 1


def test_cli_stalled_flag(fake, subjects, tmp_path):
    path = table(tmp_path, subjects, FINISHED, stalled=STALLED)
    args = ["retire", str(path), "--workflow-id", str(WF), "--endpoint", fake.url, "--state", str(tmp_path / "s")]
    res = CliRunner().invoke(main, [*args, "--stalled"])
    assert res.exit_code == 0, res.output
    assert "retired 3 subjects now (reason 'consensus') and 3 stalled (reason 'other')" in res.output
    assert sorted(fake.state.retired(WF).values()) == ["consensus"] * 3 + ["other"] * 3


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


def test_a_batch_the_server_knows_none_of_is_reported_and_the_run_goes_on(fake, subjects, tmp_path):
    """Panoptes answers 404 when none of the ids asked for exists: that is "unknown", not a failure to resume."""
    path = table(tmp_path, [*subjects[:2], 987654321, 987654322], [True] * 4)
    report = retire_finished(path, options(fake, tmp_path, batch_size=2), progress=False)
    assert report.retired_now == 2 and report.unknown == ["987654321", "987654322"]
    again = retire_finished(path, options(fake, tmp_path, batch_size=2), progress=False)
    assert again.retired_now == 0 and again.unknown == ["987654321", "987654322"]  # checked again, still unknown
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
    pd.DataFrame({"subject_id": [11, 12], "is_finished": [False, True], "is_stalled": ["yes", "maybe"]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"bad\.csv.*subject_id 12.*is_stalled.*not true or false"):
        read_subjects_table(tmp_path / "bad.csv")
    pd.DataFrame({"subject_id": [11], "is_finished": [True], "is_stalled": [True]}).to_csv(tmp_path / "both.csv")
    with pytest.raises(ClumptoolError, match=r"both\.csv.*subject_id 11.*is_stalled.*never both"):
        read_subjects_table(tmp_path / "both.csv")
    pd.DataFrame({"subject_id": [11, 11, 12], "is_finished": False, "is_stalled": [True, False, True]}).to_csv(
        tmp_path / "dup.csv", index=False)
    assert read_subjects_table(tmp_path / "dup.csv").stalled == {"12": ""}, "stalled only if every row says so"
    pd.DataFrame({"subject_id": [11], "n_clumps": [1]}).to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"old\.csv: no is_finished column"):
        read_subjects_table(tmp_path / "old.csv")
