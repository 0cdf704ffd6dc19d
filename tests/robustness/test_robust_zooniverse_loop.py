"""fetch-export and retire as a user (or a cron job) meets them, against the loopback fake Zooniverse.

Every case asserts the exit code, that the message names the option/file and says how to fix it, and that
the previous outputs (the fetched exports, the retirement ledger) are byte-identical after a failure.
"""

from __future__ import annotations

import contextlib
import sqlite3
import types
from pathlib import Path

import harness
import pandas as pd
import pytest

from clumptool.testing.fake_panoptes import classification_record, export_csv
from clumptool.testing.panoptes_env import (
    forget_sessions,
    isolate_environment,
    logged_in_fake,
    single_attempt_client,
)

interrupt_when, no_traceback, run_cli, snapshot = (harness.interrupt_when, harness.no_traceback, harness.run_cli,
                                                   harness.snapshot)
USER, PASSWORD = "clumpbot", "loop-Pw-41zz"
BLOB = r"^/blob/exports/"
RETIRE = r"^/api/workflows/5678/retired_subjects$"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    isolate_environment(monkeypatch, tmp_path / "state-root")


@pytest.fixture
def fake(monkeypatch):
    """The fake Zooniverse (project 1234, workflow 5678) with credentials in the environment."""
    pc = single_attempt_client(monkeypatch)
    # wait_export polls every 2 s: no sleeping in the client (only there: the fake's delays stay real)
    monkeypatch.setattr(pc.exportable, "time", types.SimpleNamespace(sleep=lambda s: None))
    with logged_in_fake(monkeypatch, USER, PASSWORD) as server:
        yield server
    forget_sessions(pc)


def export(ids) -> bytes:
    return export_csv([classification_record(i, 2001, f"u{i}", [(10.0 + i, 20.0, 0)]) for i in ids])


@pytest.fixture
def fetched(fake, tmp_path) -> Path:
    """An --out already holding a fetched export (the previous outputs that failures must not touch)."""
    fake.publish_export("workflows", 5678, "classifications", export(range(1, 6)))
    out = tmp_path / "exports"
    res = run_cli("fetch-export", "--workflow-id", 5678, "--endpoint", fake.url, "--out", out, "--quiet")
    assert res.code == 0, res.text
    return out


def failed(res, code: int, *words: str) -> None:
    no_traceback(res)
    assert res.code == code, res.text
    assert "Error:" in res.err, res.text
    for w in words:
        assert w in res.err, f"{w!r} not in:\n{res.err}"
    assert PASSWORD not in res.text


def fetch(fake, out, *extra):
    return run_cli("fetch-export", "--workflow-id", 5678, "--endpoint", fake.url, "--out", out, "--quiet", *extra)


# ----------------------------------------------------------------------------------------------------
# fetch-export
# ----------------------------------------------------------------------------------------------------


def test_fetch_no_export_yet_says_generate(fake, tmp_path):
    failed(fetch(fake, tmp_path / "out"), 2, "classifications export of workflow 5678", "add --generate")
    assert not (tmp_path / "out").exists()


def test_fetch_truncated_file_refused_previous_kept(fake, fetched):
    before = snapshot(fetched)
    fake.publish_export("workflows", 5678, "classifications", export(range(1, 9)))
    good = (fetched / "classifications.csv").stat().st_size
    fake.state.add_fault("GET", BLOB, cut_after=good + 30, truncate=True)
    failed(fetch(fake, fetched), 2, "classifications.csv: the export is incomplete", "record 6",
           "Run the same command again", "--generate")
    assert snapshot(fetched) == before


def test_fetch_expired_link_previous_kept(fake, fetched):
    before = snapshot(fetched)
    fake.state.add_fault("GET", BLOB, status=403, message="AuthenticationFailed")
    res = fetch(fake, fetched)
    failed(res, 2, "classifications.csv: the download from", "HTTP 403", "run the same command again")
    assert "sig=" not in res.text, "the signed URL's signature is never printed"
    assert snapshot(fetched) == before


def test_fetch_wait_timeout_says_how_to_resume(fake, fetched):
    before = snapshot(fetched)
    fake.state.export_delay = 3600
    failed(fetch(fake, fetched, "--generate", "--wait-minutes", "0.001"), 2, "--wait-minutes 0.001",
           "still being generated", "WITHOUT --generate")
    assert snapshot(fetched) == before
    failed(fetch(fake, fetched), 2, "still being generated", "add --wait-minutes")
    assert snapshot(fetched) == before


def test_fetch_incremental_refuses_a_broken_local_export(fake, fetched):
    local = fetched / "classifications.csv"
    local.write_bytes(local.read_bytes()[:-25])  # a hand-edited or half-copied local file
    before = snapshot(fetched)
    failed(fetch(fake, fetched, "--incremental"), 2, str(local), "the export is incomplete")
    assert snapshot(fetched) == before


def test_fetch_incremental_counts_new(fake, fetched):
    fake.publish_export("workflows", 5678, "classifications", export(range(3, 9)))
    res = run_cli("fetch-export", "--workflow-id", 5678, "--endpoint", fake.url, "--out", fetched, "--since-last")
    assert res.code == 0, res.text
    assert "3 new classifications added to the 5 already fetched" in res.out
    assert (fetched / "classifications.csv").read_bytes() == export(range(1, 9))


@pytest.mark.parametrize("extra, env, words", [
    ([], {"PANOPTES_PASSWORD": None}, ["PANOPTES_USERNAME and PANOPTES_PASSWORD", "only PANOPTES_USERNAME"]),
    (["--wait-minutes", "-1"], {}, ["--wait-minutes -1", "0 or more"]),
    (["--project-id", "999"], {}, ["--workflow-id 5678 belongs to project 1234, not --project-id 999"]),
], ids=["no-password", "negative-wait", "wrong-project"])
def test_fetch_bad_options(fake, tmp_path, monkeypatch, extra, env, words):
    for k in env:
        monkeypatch.delenv(k)
    failed(fetch(fake, tmp_path / "out", *extra), 2, *words)
    assert not (tmp_path / "out").exists()


def test_fetch_refuses_a_folder_of_user_files_before_any_request(fake, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    failed(fetch(fake, mine), 2, f"--out {mine}", "holds files clumptool did not write", "choose a new or empty folder")
    assert not fake.state.requests and (mine / "notes.txt").read_text() == "mine"


def test_fetch_endpoint_with_password_is_refused_unprinted(fake, tmp_path):
    url = fake.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    failed(run_cli("fetch-export", "--workflow-id", 5678, "--endpoint", url, "--out", tmp_path / "o"), 2,
           "remove the user:password@ part")


def test_fetch_sigint_during_download_keeps_previous(fake, fetched):
    before = snapshot(fetched)
    fake.publish_export("workflows", 5678, "classifications", export(range(1, 400)))
    fake.state.add_fault("GET", BLOB, status=0, delay=3.0)  # hold the download so the signal lands inside it
    args = ["fetch-export", "--workflow-id", 5678, "--endpoint", fake.url, "--out", fetched]
    earlier = len(fake.state.requests_to("GET", BLOB))
    res = interrupt_when(args, lambda: len(fake.state.requests_to("GET", BLOB)) > earlier,
                         env={"PANOPTES_USERNAME": USER, "PANOPTES_PASSWORD": PASSWORD})
    no_traceback(res)
    assert res.code == 130, res.text
    assert "is as it was before this run" in res.err and "run the same command again" in res.err
    assert snapshot(fetched) == before


# ----------------------------------------------------------------------------------------------------
# retire
# ----------------------------------------------------------------------------------------------------


def subjects_table(tmp_path: Path, ids, finished, name="subjects.parquet") -> Path:
    df = pd.DataFrame({"subject_id": [int(i) for i in ids], "is_finished": finished,
                       "finished_reason": ["below --retire-below" if f else "too uncertain" for f in finished]})
    path = tmp_path / name
    df.to_parquet(path, index=False) if name.endswith(".parquet") else df.to_csv(path, index=False)
    return path


def retire(fake, table, state, *extra):
    return run_cli("retire", table, "--workflow-id", 5678, "--endpoint", fake.url, "--state", state, *extra)


def ledger_rows(state: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(state / "al_ledger.sqlite")) as db:
        return db.execute("SELECT subject_id, state FROM retirements ORDER BY subject_id").fetchall()


def test_retire_fault_half_way_then_resume_idempotent(fake, tmp_path):
    ids = fake.add_linked_subjects(7)
    table = subjects_table(tmp_path, ids, [True, True, False, True, True, True, True])
    fake.state.add_fault("POST", RETIRE, nth=2, status=502, message="Bad Gateway")
    res = retire(fake, table, tmp_path / "state", "--batch-size", 2)
    failed(res, 2, "after 2 of 6 were retired", "run the same command again to resume")
    assert len(fake.state.retired(5678)) == 2
    again = retire(fake, table, tmp_path / "state", "--batch-size", 2)
    assert again.code == 0, again.text
    assert "retired 4 subjects now" in again.out and "2 already retired" in again.out
    assert set(fake.state.retired(5678)) == set(ids) - {ids[2]}, "the unfinished galaxy is never retired"
    before = snapshot(tmp_path / "state")
    posts = len(fake.state.requests_to("POST", RETIRE))
    third = retire(fake, table, tmp_path / "state", "--quiet")
    assert third.code == 0 and third.out == "", third.text
    assert len(fake.state.requests_to("POST", RETIRE)) == posts, "a rerun retires nothing twice"
    assert [s for _, s in ledger_rows(tmp_path / "state")] == ["retired"] * 6
    assert snapshot(tmp_path / "state") == before


def test_retire_max_cap_refuses_and_sends_nothing(fake, tmp_path):
    ids = fake.add_linked_subjects(4)
    table = subjects_table(tmp_path, ids, [True] * 4)
    failed(retire(fake, table, tmp_path / "state", "--max", 3), 2, "4 finished subjects", "more than --max 3",
           "raise --max to 4", "add --partial")
    assert not fake.state.requests_to("POST", RETIRE)
    assert not ledger_rows(tmp_path / "state")


def test_retire_dry_run_lists_and_sends_nothing(fake, tmp_path):
    ids = fake.add_linked_subjects(3)
    table = subjects_table(tmp_path, ids, [True, False, True], name="subjects.csv")
    res = retire(fake, table, tmp_path / "state", "--dry-run", "--quiet")
    assert res.code == 0, res.text
    assert "dry run: 2 subjects would be retired" in res.out and ids[0] in res.out and ids[1] not in res.out
    assert not fake.state.requests and not (tmp_path / "state").exists()


@pytest.mark.parametrize("frame, words", [
    (pd.DataFrame({"subject_id": [1], "n_clumps": [2]}), ["no is_finished column", "subjects.parquet"]),
    (pd.DataFrame({"subject_id": [1, 2], "is_finished": ["true", "perhaps"]}),
     ["subject_id 2", "is_finished", "'perhaps' is not true or false"]),
    (pd.DataFrame({"subject_id": ["galaxy_a"], "is_finished": [True]}),
     ["subject_id", "not an integer Zooniverse subject id"]),
], ids=["old-table", "bad-flag", "bad-id"])
def test_retire_bad_tables(fake, tmp_path, frame, words):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    failed(retire(fake, path, tmp_path / "state"), 2, str(path), *words)
    assert not fake.state.requests


def test_retire_bad_batch_size(fake, tmp_path):
    table = subjects_table(tmp_path, [1], [True])
    failed(retire(fake, table, tmp_path / "state", "--batch-size", 0), 2, "--batch-size 0", "1 to 500")


def test_retire_unknown_subjects_warned_even_quiet(fake, tmp_path):
    ids = fake.add_linked_subjects(1)
    table = subjects_table(tmp_path, [*ids, 424242], [True, True])
    res = retire(fake, table, tmp_path / "state", "--quiet")
    no_traceback(res)
    assert res.code == 0, res.text
    assert "424242" in res.err and "check --workflow-id and --endpoint" in res.err
    assert fake.state.retired(5678) == {ids[0]: "consensus"}
    assert ledger_rows(tmp_path / "state") == [(ids[0], "retired"), ("424242", "unknown")]


def test_fetch_incremental_into_another_workflows_export_refused(fake, fetched):
    fake.state.workflows["5679"] = {**fake.state.workflows["5678"], "id": "5679"}
    before = snapshot(fetched)
    res = run_cli("fetch-export", "--workflow-id", 5679, "--endpoint", fake.url, "--out", fetched, "--incremental")
    failed(res, 2, "holds the export of workflow 5678, not --workflow-id 5679", "give another --out")
    assert snapshot(fetched) == before


def test_retire_sigint_mid_run_then_resume(fake, tmp_path):
    ids = fake.add_linked_subjects(6)
    table = subjects_table(tmp_path, ids, [True] * 6)
    fake.state.add_fault("POST", RETIRE, nth=2, status=0, delay=3.0, after=True)  # hold the 2nd batch
    args = ["retire", table, "--workflow-id", 5678, "--endpoint", fake.url, "--state", tmp_path / "state",
            "--batch-size", 2]
    res = interrupt_when(args, lambda: len(fake.state.requests_to("POST", RETIRE)) >= 2,
                         env={"PANOPTES_USERNAME": USER, "PANOPTES_PASSWORD": PASSWORD})
    no_traceback(res)
    assert res.code == 130, res.text
    assert "run the same command again to resume" in res.err
    again = retire(fake, table, tmp_path / "state", "--batch-size", 2)
    assert again.code == 0, again.text
    assert set(fake.state.retired(5678)) == set(ids)
    sent = [s for p in fake.state.requests_to("POST", RETIRE) for s in p["body"]["subject_ids"]]
    assert sorted(sent) == sorted(ids + ids[2:4]), "only the batch in flight is sent again"
    assert [s for _, s in ledger_rows(tmp_path / "state")] == ["retired"] * 6
