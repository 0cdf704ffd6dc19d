"""The SQLite upload ledger: idempotent selection, rounds, state transitions that survive restarts."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from clumptool.active_learning.ledger import DEFAULT_LEDGER_NAME, Ledger
from clumptool.common.errors import ClumptoolError


def sel(ids, score=0.5):
    return pd.DataFrame({"galaxy_id": ids, "score": [score] * len(ids), "strategy": "bald",
                         "rank": range(1, len(ids) + 1), "control": 0})


def test_record_selection_is_idempotent(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.record_selection("r1", sel(["a", "b", "c"])) == 3
    ledger.mark("a", "r1", "created", subject_id="101")
    ledger.mark("b", "r1", "linked", subject_id="102")
    # same galaxies again (new scores), plus one new galaxy
    assert ledger.record_selection("r1", sel(["a", "b", "c", "d"], score=0.9)) == 1
    rows = ledger.rows("r1").set_index("galaxy_id")
    assert len(rows) == 4
    assert rows.loc["a", "state"] == "created" and rows.loc["a", "subject_id"] == "101"
    assert rows.loc["b", "state"] == "linked" and rows.loc["b", "subject_id"] == "102"
    assert rows.loc["a", "score"] == 0.5          # started galaxies keep the selection they went out with
    assert rows.loc["c", "score"] == 0.9          # untouched ones take the refreshed selection
    assert list(ledger.pending("r1")["galaxy_id"]) == ["a", "c", "d"]
    assert ledger.summary("r1") == {"selected": 2, "created": 1, "uploaded": 0, "linked": 1, "failed": 0,
                                    "total": 4}


def test_integer_ids_and_duplicates(tmp_path):
    ledger = Ledger(tmp_path)  # a folder: the default file name inside it
    assert ledger.path == tmp_path / DEFAULT_LEDGER_NAME
    ledger.record_selection("r1", pd.DataFrame({"galaxy_id": [90000001, 90000002]}))
    assert ledger.already_taken() == {"90000001", "90000002"}
    with pytest.raises(ClumptoolError, match="twice"):
        ledger.record_selection("r2", pd.DataFrame({"galaxy_id": ["x", "x"]}))
    with pytest.raises(ClumptoolError, match="galaxy_id"):
        ledger.record_selection("r2", pd.DataFrame({"id": ["x"]}))


def test_already_taken_across_rounds(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_selection("round-1", sel(["a", "b"]))
    ledger.mark("a", "round-1", "failed", error="quota")  # a failed galaxy is still owed to round 1
    ledger.record_selection("round-2", sel(["c"]))
    assert ledger.already_taken() == {"a", "b", "c"}
    assert ledger.already_taken(exclude_round="round-2") == {"a", "b"}
    assert ledger.already_taken(exclude_round="round-1") == {"c"}
    assert ledger.rounds() == ["round-1", "round-2"]


def test_states_persist_across_process_restarts(tmp_path):
    path = tmp_path / "state" / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.record_selection("r1", sel(["a", "b", "c"]))
        ledger.mark("a", "r1", "created", subject_id="7")
        ledger.begin_create("b", "r1")
        ledger.set_round_info("r1", subject_set_id=1001, project_id=1234, endpoint="http://x")
    # another process moves 'a' on and fails 'c', as a second upload run would
    code = ("from clumptool.active_learning.ledger import Ledger; import sys; "
            "l = Ledger(sys.argv[1]); l.mark('a', 'r1', 'uploaded'); l.mark('c', 'r1', 'failed', error='boom')")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with Ledger(path) as reopened:
        a, b, c = (reopened.get(g, "r1") for g in "abc")
        assert (a["state"], a["subject_id"]) == ("uploaded", "7")       # subject id kept by mark()
        assert b["create_pending"] == 1 and b["attempts"] == 1          # an unanswered create is remembered
        assert (c["state"], c["error"]) == ("failed", "boom")
        assert reopened.round_info("r1")["subject_set_id"] == "1001"
        reopened.mark("a", "r1", "selected", clear_subject=True)
        reopened.mark("b", "r1", "created", subject_id="8")
    with Ledger(path) as third:
        assert third.get("a", "r1")["subject_id"] is None
        assert third.get("b", "r1")["create_pending"] == 0               # cleared once the id is known


def test_bad_marks_and_files(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_selection("r1", sel(["a"]))
    with pytest.raises(ValueError, match="unknown ledger state"):
        ledger.mark("a", "r1", "done")
    with pytest.raises(ClumptoolError, match="never selected"):
        ledger.mark("zz", "r1", "linked")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ClumptoolError, match="not a clumptool ledger"):
        Ledger(junk)
