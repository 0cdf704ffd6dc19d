"""Upload to Zooniverse end to end: the real panoptes-client against the loopback fake server.

Covers the normal upload, idempotent re-runs, resumption after every kind of failure half way (quota 403,
failed media PUT, 500, dropped connections before and after the server acted, Ctrl-C), credential hygiene
and the dry run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from clumptool.active_learning.ledger import Ledger
from clumptool.active_learning.panoptes_session import credentials_from_env
from clumptool.active_learning.zooniverse import UploadConfig, upload_selection
from clumptool.common.errors import ClumptoolError

PNG = b"\x89PNG\r\n\x1a\n"
ROUND = "round-1"
SET_NAME = "clumptool AL round 1"


def config(fake, **kw) -> UploadConfig:
    kw.setdefault("subject_set_name", SET_NAME)
    return UploadConfig(project_id=1234, workflow_id=5678, endpoint=fake.url, **kw)


def upload(fake, selection, ledger, **kw):
    return upload_selection(selection, ledger, ROUND, config(fake, **kw), progress=False)


def assert_complete(fake, selection, ledger) -> list[dict]:
    """Exactly one stored, linked subject per galaxy with its PNG bytes; nothing else on the server."""
    state = fake.state
    sets = state.sets_named(SET_NAME)
    assert len(sets) == 1
    members = state.subject_ids_in_set(sets[0]["id"])
    subjects = [state.subjects[sid] for sid in members]
    assert sorted(s["metadata"]["#galaxy_id"] for s in subjects) == sorted(selection["galaxy_id"])
    assert len(state.subjects) == len(selection), "stray subjects left on the server"
    files = dict(zip(selection["galaxy_id"], selection["file"], strict=True))
    for s in subjects:
        (blob,) = state.media(s["id"])
        assert blob is not None and blob.startswith(PNG)
        assert blob == Path(files[s["metadata"]["#galaxy_id"]]).read_bytes()
    rows = ledger.rows(ROUND)
    assert set(rows["state"]) == {"linked"}
    assert set(rows["subject_id"]) == set(members)
    assert sets[0]["id"] in state.workflows["5678"]["links"]["subject_sets"]
    return subjects


def test_upload_end_to_end(fake, selection, tmp_path):
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    report = upload(fake, selection, ledger, model_version="clumptool-0.1/abc123")
    assert report.ok, report.format()
    assert (report.created, report.linked_now, report.linked_total, report.requested) == (5, 5, 5, 5)
    assert report.workflow_linked and not report.reused_set
    subjects = assert_complete(fake, selection, ledger)
    by_gid = {s["metadata"]["#galaxy_id"]: s for s in subjects}
    first = by_gid["G0000"]["metadata"]
    assert first == {"#galaxy_id": "G0000", "#al_round": ROUND, "#acquisition": "bald", "#al_score": 0.9,
                     "#priority": 1, "#al_control": 0, "#model_version": "clumptool-0.1/abc123",
                     "ra": 150.0, "dec": 2.0}
    # #priority reached the set membership, i.e. it was on the subject when it was linked
    members = fake.state.members(report.subject_set_id)
    priority = {fake.state.subjects[m["links"]["subject"]]["metadata"]["#galaxy_id"]: m["priority"]
                for m in members}
    assert priority == {f"G{i:04d}": float(i + 1) for i in range(5)}
    # requests: one create per subject, PNG media PUTs, links with plain ids in one POST, no per-subject GETs
    assert len(fake.state.requests_to("POST", r"^/api/subjects$")) == 5
    puts = fake.state.requests_to("PUT", r"^/blob/")
    assert len(puts) == 5 and all(p["body"]["content_type"] == "image/png" for p in puts)
    links = fake.state.requests_to("POST", r"/links/subjects$")
    assert len(links) == 1 and sorted(links[0]["body"]["subjects"]) == sorted(s["id"] for s in subjects)
    assert not fake.state.requests_to("GET", r"^/api/set_member_subjects")
    assert fake.state.subject_sets[report.subject_set_id]["metadata"]["#clumptool_round"] == ROUND


def test_second_call_does_nothing_and_reuses_the_set(fake, selection, tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert upload(fake, selection, ledger).ok
    n_requests = len(fake.state.requests)
    again = upload(fake, selection, ledger)
    assert again.ok and again.reused_set
    assert (again.created, again.linked_now, again.linked_total) == (0, 0, 5)
    new = fake.state.requests[n_requests:]
    assert not [r for r in new if r["method"] in ("POST", "PUT", "DELETE") and r["path"].startswith("/api/")]
    assert_complete(fake, selection, ledger)


def test_lost_ledger_recovers_from_the_server_without_duplicates(fake, selection, tmp_path):
    assert upload(fake, selection, Ledger(tmp_path / "a.sqlite")).ok
    fresh = Ledger(tmp_path / "b.sqlite")  # same round and set name, no local memory
    report = upload(fake, selection, fresh)
    assert report.ok and report.reused_set and report.recovered == 5 and report.created == 0
    assert_complete(fake, selection, fresh)


def test_extra_galaxies_join_the_existing_set(fake, tmp_path, make_selection):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    sel = make_selection(tmp_path / "c", n=6)
    assert upload(fake, sel.iloc[:3], ledger).ok
    report = upload(fake, sel, ledger)
    assert report.ok and report.reused_set and report.created == 3
    assert_complete(fake, sel, ledger)


FAULTS = {
    "quota 403 on the 4th create": dict(method="POST", path=r"^/api/subjects$", nth=4, status=403,
                                        message="User has uploaded 3 subjects of 3 maximum"),
    "failed media PUT": dict(method="PUT", path=r"^/blob/", nth=2, status=403,
                             message="AuthenticationFailed"),
    "500 on a create": dict(method="POST", path=r"^/api/subjects$", nth=3, status=500),
    "connection dropped before a create": dict(method="POST", path=r"^/api/subjects$", nth=2, drop=True),
    "create answer lost (server created it)": dict(method="POST", path=r"^/api/subjects$", nth=3, drop=True,
                                                   after=True),
    "connection dropped on a media PUT": dict(method="PUT", path=r"^/blob/", nth=4, drop=True),
    "link answer lost (server linked them)": dict(method="POST", path=r"/links/subjects$", nth=1, drop=True,
                                                  after=True),
    "500 on linking": dict(method="POST", path=r"/links/subjects$", nth=1, status=500),
    "500 on the workflow link": dict(method="POST", path=r"/links/subject_sets$", nth=1, status=500),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_failure_half_way_then_resume(fake, selection, tmp_path, fault):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    injected = fake.state.add_fault(**fault)
    first = upload(fake, selection, ledger, link_batch=2)
    assert injected.fired == 1
    assert not first.ok
    text = first.format()
    assert "run the same command again" in text
    assert first.failures or first.errors or first.stopped_early
    # the failed galaxy is not counted as done
    assert first.linked_total < 5 or "workflow" in str(first.errors)
    if fault["path"] == r"^/blob/":
        failed = [gid for gid, err in first.failures]
        assert len(failed) == 1 and "media upload failed" in dict(first.failures)[failed[0]]
        assert ledger.get(failed[0], ROUND)["state"] == "failed"
    if "quota" in fault.get("message", ""):
        assert "quota" in first.stopped_early and first.linked_total == 3
    second = upload(fake, selection, ledger)
    assert second.ok, second.format()
    assert_complete(fake, selection, ledger)


def test_interrupted_between_create_and_media_upload(fake, selection, tmp_path, monkeypatch):
    """Ctrl-C right after the create POST answered: the subject exists without media; the next run
    finds it through the ledger, deletes it and uploads the galaxy again."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    real_mark = Ledger.mark

    def mark(self, galaxy_id, round_name, state, *args, **kwargs):
        real_mark(self, galaxy_id, round_name, state, *args, **kwargs)
        if galaxy_id == "G0002" and state == "created":
            raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "mark", mark)
    with pytest.raises(KeyboardInterrupt):
        upload(fake, selection, ledger)
    monkeypatch.setattr(Ledger, "mark", real_mark)
    row = ledger.get("G0002", ROUND)
    assert row["state"] == "created" and row["subject_id"] in fake.state.subjects
    assert fake.state.media(row["subject_id"]) == [None]
    report = upload(fake, selection, ledger)
    assert report.ok and report.deleted == 1
    assert row["subject_id"] not in fake.state.subjects
    assert_complete(fake, selection, ledger)


def test_ledger_survives_reopening_mid_upload(fake, selection, tmp_path):
    path = tmp_path / "ledger.sqlite"
    fake.state.add_fault(method="POST", path=r"^/api/subjects$", nth=3, status=403,
                         message="User has uploaded 2 subjects of 2 maximum")
    with Ledger(path) as ledger:
        assert not upload(fake, selection, ledger).ok
    with Ledger(path) as reopened:
        assert reopened.summary(ROUND)["linked"] == 2
        assert upload(fake, selection, reopened).ok
        assert_complete(fake, selection, reopened)


def test_credentials_never_leak(fake, selection, tmp_path, caplog, capsys, monkeypatch, make_selection,
                                fake_secrets):
    PASSWORD, CLIENT_SECRET = fake_secrets["password"], fake_secrets["client_secret"]
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PANOPTES_DEBUG", "1")
    ledger = Ledger(tmp_path / "out" / "ledger.sqlite")
    fake.state.add_fault(method="PUT", path=r"^/blob/", nth=1, status=403, message="AuthenticationFailed")
    fake.state.add_fault(method="POST", path=r"^/api/subjects$", nth=3, status=422,
                         message="Validation failed")
    first = upload(fake, selection, ledger)
    second = upload(fake, selection, ledger)
    assert second.ok
    # client-credentials flow too
    monkeypatch.delenv("PANOPTES_USERNAME")
    monkeypatch.delenv("PANOPTES_PASSWORD")
    monkeypatch.setenv("PANOPTES_CLIENT_ID", "clumptool-app")
    monkeypatch.setenv("PANOPTES_CLIENT_SECRET", CLIENT_SECRET)
    other = make_selection(tmp_path / "out" / "more", n=2, seed=3)
    other["galaxy_id"] = ["H1", "H2"]
    assert upload_selection(other, ledger, "round-2", config(fake, subject_set_name="r2"), progress=False).ok
    tokens = list(fake.state.tokens) + list(fake.state.refresh_tokens)
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, first.format(), second.format(), repr(first)]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    for secret in (PASSWORD, CLIENT_SECRET, *tokens):
        assert not any(secret in t for t in texts), f"secret {secret[:4]}... leaked"
    # and the server-side request log of the fake is redacted as well
    assert PASSWORD not in repr(fake.state.requests) and CLIENT_SECRET not in repr(fake.state.requests)


def test_dry_run_sends_nothing(fake, selection, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with monkeypatch.context() as m:
        m.delenv("PANOPTES_PASSWORD")  # not even credentials are needed
        report = upload(fake, selection, ledger, dry_run=True)
    assert report.ok and report.dry_run and report.would_upload == 5
    assert "nothing was sent" in report.format()
    assert fake.state.requests == []
    assert ledger.summary(ROUND)["total"] == 0  # nothing recorded: later rounds may still pick them
    assert upload(fake, selection.iloc[:2], ledger).ok
    monkeypatch.delenv("PANOPTES_USERNAME")
    n = len(fake.state.requests)
    again = upload(fake, selection, ledger, dry_run=True)
    assert (again.linked_total, again.would_upload) == (2, 3) and len(fake.state.requests) == n


def test_quota_checked_before_uploading(panoptes_client, selection, tmp_path, monkeypatch, fake_secrets):
    PASSWORD = fake_secrets["password"]
    from clumptool.testing.fake_panoptes import FakePanoptes

    monkeypatch.setenv("PANOPTES_USERNAME", "clumpbot")
    monkeypatch.setenv("PANOPTES_PASSWORD", PASSWORD)
    with FakePanoptes(users={"clumpbot": PASSWORD}, subject_limit=3) as small:
        with pytest.raises(ClumptoolError, match="uploaded 0 of 3 subjects.*needs 5"):
            upload(small, selection, Ledger(tmp_path / "l.sqlite"))
        assert not small.state.requests_to("POST", r"^/api/subjects$")


def test_bad_login_and_missing_credentials(fake, selection, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "l.sqlite")
    monkeypatch.setenv("PANOPTES_PASSWORD", "wrong-password")
    with pytest.raises(ClumptoolError, match="login failed.*Invalid login or password"):
        upload(fake, selection, ledger)
    monkeypatch.delenv("PANOPTES_PASSWORD")
    with pytest.raises(ClumptoolError, match="PANOPTES_USERNAME and PANOPTES_PASSWORD"):
        upload(fake, selection, ledger)
    monkeypatch.setenv("PANOPTES_CLIENT_ID", "clumptool-app")
    monkeypatch.setenv("PANOPTES_CLIENT_SECRET", "wrong-secret")
    with pytest.raises(ClumptoolError, match="login failed.*invalid_client"):
        upload(fake, selection, ledger)
    assert not fake.state.subjects
    assert credentials_from_env({"PANOPTES_CLIENT_ID": "a", "PANOPTES_CLIENT_SECRET": "b"}) == {
        "client_id": "a", "client_secret": "b"}


def test_unknown_project_and_bad_files_are_user_errors(fake, selection, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(ClumptoolError, match="--project-id 999: not found"):
        upload_selection(selection, ledger, ROUND, UploadConfig(999, None, SET_NAME, endpoint=fake.url),
                         progress=False)
    bad = selection.copy()
    Path(bad.loc[2, "file"]).write_bytes(b"not a png")
    n = len(fake.state.requests)
    with pytest.raises(ClumptoolError, match=r"row 3 \(galaxy_id G0002\).*not a PNG"):
        upload(fake, bad, ledger)
    assert len(fake.state.requests) == n  # checked before any request


def test_fake_server_pages_and_persists(panoptes_client, selection, tmp_path, monkeypatch, fake_secrets):
    """The fake paginates like Panoptes (next_href relative to /api) and, with a state folder, keeps its
    subjects and blobs across restarts, so a demo upload can be resumed against a restarted server."""
    from clumptool.testing.fake_panoptes import FakePanoptes

    monkeypatch.setenv("PANOPTES_USERNAME", "clumpbot")
    monkeypatch.setenv("PANOPTES_PASSWORD", fake_secrets["password"])
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with FakePanoptes(users={"clumpbot": fake_secrets["password"]}, state_dir=tmp_path / "fake") as first:
        assert upload(first, selection, ledger).ok
        set_id = ledger.round_info(ROUND)["subject_set_id"]
        with panoptes_client.Panoptes(endpoint=first.url):
            listed = [s.id for s in panoptes_client.Subject.where(subject_set_id=set_id, page_size=2)]
        assert sorted(listed) == sorted(ledger.rows(ROUND)["subject_id"])
        pages = first.state.requests_to("GET", r"^/api/subjects$")[-3:]
        assert [r["query"].get("page", "1") for r in pages] == ["1", "2", "3"]
    assert fake_secrets["password"] not in (tmp_path / "fake" / "requests.jsonl").read_text()
    with FakePanoptes(users={"clumpbot": fake_secrets["password"]}, state_dir=tmp_path / "fake") as again:
        assert len(again.state.subjects) == 5
        report = upload(again, selection, ledger)
        assert report.ok and report.created == 0 and report.reused_set
        assert_complete(again, selection, ledger)


def test_fake_panoptes_command(panoptes_client, selection, tmp_path, monkeypatch):
    """`clumptool fake-panoptes` serves in the foreground, prints its URL, keeps state, stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    state = tmp_path / "fake-state"
    fault = '{"method": "PUT", "path": "^/blob/", "nth": 1, "status": 403, "message": "nope"}'
    proc = subprocess.Popen([sys.executable, "-m", "clumptool.cli", "fake-panoptes", "--port", "0", "--state",
                             str(state), "--fault", fault], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake Panoptes API at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[4]
        monkeypatch.setenv("PANOPTES_USERNAME", "clumpbot")
        monkeypatch.setenv("PANOPTES_PASSWORD", "s3cret")
        ledger = Ledger(tmp_path / "ledger.sqlite")
        cfg = UploadConfig(project_id=1234, workflow_id=5678, subject_set_name=SET_NAME, endpoint=url)
        first = upload_selection(selection, ledger, ROUND, cfg, progress=False)
        assert not first.ok and len(first.failures) == 1  # the injected media failure
        assert upload_selection(selection, ledger, ROUND, cfg, progress=False).ok
    finally:
        proc.send_signal(signal.SIGTERM)  # how a demo stops its background server
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped after" in out
    assert len(json.loads((state / "state.json").read_text())["subjects"]) == 5


def test_short_lived_tokens_are_refreshed(panoptes_client, selection, tmp_path, monkeypatch, fake_secrets):
    """Tokens the client considers expired (under its 2-minute margin) go through the refresh grant."""
    from clumptool.testing.fake_panoptes import FakePanoptes

    monkeypatch.setenv("PANOPTES_USERNAME", "clumpbot")
    monkeypatch.setenv("PANOPTES_PASSWORD", fake_secrets["password"])
    with FakePanoptes(users={"clumpbot": fake_secrets["password"]}, token_lifetime=100) as server:
        ledger = Ledger(tmp_path / "l.sqlite")
        assert upload(server, selection, ledger).ok
        grants = [r["body"]["grant_type"] for r in server.state.requests_to("POST", r"^/oauth/token$")]
        assert grants[0] == "password" and grants.count("refresh_token") >= 5
        assert_complete(server, selection, ledger)


def test_run_stops_when_the_server_keeps_failing(fake, selection, tmp_path):
    fake.state.add_fault(method="POST", path=r"^/api/subjects$", nth=1, times=100, status=422,
                         message="Validation failed: metadata is invalid")
    report = upload(fake, selection, Ledger(tmp_path / "l.sqlite"), max_consecutive_failures=3)
    assert "3 failures in a row" in report.stopped_early and len(report.failures) == 3
    assert len(fake.state.requests_to("POST", r"^/api/subjects$")) == 3  # no hammering, no 40 s retries


def test_importing_the_client_leaves_root_logging_alone():
    import subprocess
    import sys

    code = ("import logging; from clumptool.active_learning.panoptes_session import import_panoptes_client; "
            "import_panoptes_client(); root = logging.getLogger(); "
            "assert root.handlers == [] and root.level == logging.WARNING, (root.handlers, root.level)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_verify_media_reads_every_image_back(fake, selection, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    corrupted = []

    class Corrupting(dict):  # the storage keeps the first image truncated: only a read-back can tell
        def __setitem__(self, key, value):
            if not corrupted:
                corrupted.append(key)
                value = value[:20]
            super().__setitem__(key, value)

    fake.state.blobs = Corrupting(fake.state.blobs)
    report = upload(fake, selection, ledger, verify_media=True)
    assert len(fake.state.requests_to("GET", r"^/blob/")) == 5
    assert [err for _, err in report.failures] == ["stored media differs from the local file; subject deleted"]
    assert upload(fake, selection, ledger, verify_media=True).ok
    assert_complete(fake, selection, ledger)


def test_stray_duplicate_is_deleted_not_linked(fake, selection, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert upload(fake, selection, ledger).ok
    linked_id = ledger.get("G0001", ROUND)["subject_id"]
    with fake.state.lock:  # a second subject of G0001 that the ledger wrongly points at
        stray = fake.state.new_id()
        fake.state.subjects[stray] = {**fake.state.subjects[linked_id], "id": stray,
                                      "locations": [{"type": "image/png", "key": "subject_location/stray.png"}],
                                      "links": {"project": "1234", "collections": [], "subject_sets": []}}
        fake.state.blobs["subject_location/stray.png"] = fake.state.media(linked_id)[0]
    ledger.mark("G0001", ROUND, "uploaded", subject_id=stray)
    report = upload(fake, selection, ledger)
    assert report.ok and report.deleted == 1 and stray not in fake.state.subjects
    assert ledger.get("G0001", ROUND)["subject_id"] == linked_id
    assert_complete(fake, selection, ledger)
