"""fetch-export end to end: the real panoptes-client's export API against the loopback fake Zooniverse.

Covers an existing export fetched byte for byte, generate + wait, the clear refusals (no export yet, still
being generated, wait timed out), a download dropped half way and resumed with a Range request, a
truncated file refused, the subjects and workflows exports, and the incremental merge without duplicates.
"""

from __future__ import annotations

import time
import types

import pandas as pd
import pytest

from clumptool.active_learning.exports import (
    FetchOptions,
    fetch_exports,
    merge_classifications,
    verify_export,
)
from clumptool.common.errors import ClumptoolError
from clumptool.common.outputs import read_manifest
from clumptool.testing.fake_panoptes import classification_record, export_csv

WF = 5678
BLOB = r"^/blob/exports/"


def records(ids, subject=2001):
    return [classification_record(i, subject, f"user{i}", [(100.0 + i, 120.0, 0), (50.5, 60.25, 1)]) for i in ids]


def options(fake, **kw) -> FetchOptions:
    return FetchOptions(workflow_id=WF, endpoint=fake.url, **kw)


@pytest.fixture
def no_sleep(monkeypatch, panoptes_client):
    """panoptes-client's wait_export polls every 2 s: make its sleeps instant (the fake's delay is real time)."""
    slept = []
    fast = types.SimpleNamespace(sleep=lambda s: (slept.append(s), time.sleep(0.05)))
    monkeypatch.setattr(panoptes_client.exportable, "time", fast)  # only the client's module: not time itself
    return slept


def test_existing_export_is_fetched_byte_for_byte(fake, tmp_path):
    data = export_csv(records(range(1, 6)))
    fake.publish_export("workflows", WF, "classifications", data)
    report = fetch_exports(tmp_path / "out", options(fake), progress=False)
    assert (tmp_path / "out" / "classifications.csv").read_bytes() == data
    assert report.files["classifications.csv"]["rows"] == 5
    manifest = read_manifest(tmp_path / "out")
    assert manifest["command"] == "fetch-export" and "sig=" not in str(manifest)
    assert not fake.state.requests_to("POST", r"_export$"), "nothing generated without --generate"


def test_no_export_yet_says_generate(fake, tmp_path):
    with pytest.raises(ClumptoolError, match="--generate"):
        fetch_exports(tmp_path / "out", options(fake), progress=False)
    assert not (tmp_path / "out").exists()


def test_generate_and_wait(fake, tmp_path, no_sleep):
    data = export_csv(records(range(1, 4)))
    fake.set_export("workflows", WF, "classifications", data)
    fake.state.export_delay = 0.3
    report = fetch_exports(tmp_path / "out", options(fake, generate=True, wait_minutes=1), progress=False)
    assert (tmp_path / "out" / "classifications.csv").read_bytes() == data
    assert len(fake.state.requests_to("POST", r"^/api/workflows/5678/classifications_export$")) == 1
    assert no_sleep, "the export was still being generated: the client waited for it"
    assert report.files["classifications.csv"]["rows"] == 3


def test_still_generating_without_wait_says_wait_minutes(fake, tmp_path):
    fake.publish_export("workflows", WF, "classifications", export_csv(records([1])))
    fake.state.export_delay = 600
    fake.set_export("workflows", WF, "classifications", export_csv(records([1, 2])))
    # someone asked for a new export in the Lab: it is 'creating'
    fake._new_medium("workflows/5678/classifications", "workflows", "5678", "classifications", None, 600)
    with pytest.raises(ClumptoolError, match="--wait-minutes"):
        fetch_exports(tmp_path / "out", options(fake), progress=False)


def test_wait_timeout_says_how_to_resume(fake, tmp_path, no_sleep):
    fake.state.export_delay = 600
    with pytest.raises(ClumptoolError, match="WITHOUT --generate") as err:
        fetch_exports(tmp_path / "out", options(fake, generate=True, wait_minutes=0.001), progress=False)
    assert "still being generated" in str(err.value)


def test_dropped_download_resumes_with_range(fake, tmp_path):
    data = export_csv(records(range(1, 1500)))
    assert len(data) > 600_000
    fake.publish_export("workflows", WF, "classifications", data)
    fake.state.add_fault("GET", BLOB, cut_after=250_000, times=2)  # each of two answers cut after 250 kB
    fetch_exports(tmp_path / "out", options(fake), progress=False)
    assert (tmp_path / "out" / "classifications.csv").read_bytes() == data
    ranges = [g["range"] for g in fake.state.requests_to("GET", BLOB)]
    assert len(ranges) == 3 and ranges[0] is None
    starts = [int(r.split("=")[1].rstrip("-")) for r in ranges[1:]]
    assert 0 < starts[0] <= 250_000 < starts[1] <= starts[0] + 250_000, "resumed where each answer stopped"


def test_truncated_export_refused_and_previous_kept(fake, tmp_path):
    good = export_csv(records(range(1, 6)))
    fake.publish_export("workflows", WF, "classifications", good)
    fetch_exports(tmp_path / "out", options(fake), progress=False)
    fake.publish_export("workflows", WF, "classifications", export_csv(records(range(1, 9))))
    fake.state.add_fault("GET", BLOB, cut_after=len(good) + 40, truncate=True)
    with pytest.raises(ClumptoolError, match=r"classifications\.csv: the export is incomplete") as err:
        fetch_exports(tmp_path / "out", options(fake), progress=False)
    assert "record 6" in str(err.value) and "run the same command again" in str(err.value).lower()
    assert (tmp_path / "out" / "classifications.csv").read_bytes() == good


def test_subjects_and_workflows_exports(fake, tmp_path):
    fake.publish_export("workflows", WF, "classifications", export_csv(records([1])))
    subjects = b'subject_id,project_id,workflow_id,subject_set_id,metadata,locations,classifications_count,' \
               b'retired_at,retirement_reason,created_at,updated_at\n2001,1234,5678,1001,"{""#galaxy_id"":""G1""}",' \
               b'"{""0"":""https://x/1.png""}",1,,,2020-01-01 00:00:00 UTC,2020-01-01 00:00:00 UTC\n'
    workflows = b'workflow_id,display_name,version,tasks\n5678,Clumps,3,"{""T0"":{""type"":""drawing""}}"\n'
    fake.publish_export("projects", 1234, "subjects", subjects)
    fake.publish_export("projects", 1234, "workflows", workflows)
    fetch_exports(tmp_path / "out", options(fake, subjects=True, workflows=True, project_id=1234), progress=False)
    assert (tmp_path / "out" / "subjects.csv").read_bytes() == subjects
    assert (tmp_path / "out" / "workflows.csv").read_bytes() == workflows
    with pytest.raises(ClumptoolError, match="--project-id 999"):
        fetch_exports(tmp_path / "other", options(fake, subjects=True, project_id=999), progress=False)


def test_a_generated_subjects_export_lists_the_servers_subjects_and_their_retirement(fake, tmp_path):
    """As Zooniverse's: one row per subject and workflow, retired_at and reason where the workflow retired it, so
    aggregate --subjects reads which galaxies volunteers still see (aggregation/subjects.py: workflow_retired)."""
    from clumptool.aggregation.subjects import workflow_retired

    ids = fake.add_linked_subjects(3)
    with fake.state.lock:
        fake.state.retirements[str(WF)] = {ids[1]: {"reason": "consensus", "retired_at": "2026-12-01T10:00:00Z"}}
    fake.publish_export("workflows", WF, "classifications", export_csv(records([1])))
    fetch_exports(tmp_path / "out", options(fake, generate=True, subjects=True, project_id=1234), progress=False)
    table = pd.read_csv(tmp_path / "out" / "subjects.csv", dtype=str, keep_default_na=False)
    rows = table[table["subject_id"].isin(ids)]
    assert rows["subject_id"].tolist() == ids and set(rows["workflow_id"]) == {str(WF)}
    assert rows["retired_at"].tolist() == ["", "2026-12-01 10:00:00 UTC", ""]
    assert rows["retirement_reason"].tolist() == ["", "consensus", ""]
    retired = workflow_retired(tmp_path / "out" / "subjects.csv", WF)
    assert [retired[int(i)] for i in ids] == [False, True, False]


def test_incremental_merge_without_duplicates(fake, tmp_path):
    out = tmp_path / "out"
    first = export_csv(records(range(1, 6)))
    fake.publish_export("workflows", WF, "classifications", first)
    report = fetch_exports(out, options(fake, incremental=True), progress=False)
    assert (report.previous_classifications, report.new_classifications) == (0, 5)
    fake.publish_export("workflows", WF, "classifications", export_csv(records(range(3, 9))))
    report = fetch_exports(out, options(fake, incremental=True), progress=False)
    assert (report.previous_classifications, report.new_classifications) == (5, 3)
    merged = (out / "classifications.csv").read_bytes()
    assert merged.startswith(first)
    assert merged == export_csv(records(range(1, 9)))
    report = fetch_exports(out, options(fake, incremental=True), progress=False)
    assert report.new_classifications == 0
    assert (out / "classifications.csv").read_bytes() == merged
    assert verify_export(out / "classifications.csv", "classifications") == 8


def test_incremental_into_a_damaged_local_export_names_it_and_the_fix(fake, tmp_path):
    out = tmp_path / "out"
    fake.publish_export("workflows", WF, "classifications", export_csv(records(range(1, 6))))
    fetch_exports(out, options(fake, incremental=True), progress=False)
    local = out / "classifications.csv"
    local.write_bytes(local.read_bytes()[:-40])  # e.g. a copy cut short by a full disk
    fake.state.requests.clear()
    with pytest.raises(ClumptoolError) as err:
        fetch_exports(out, options(fake, incremental=True), progress=False)
    message = str(err.value)
    assert str(local) in message and "local file is damaged" in message and "without --incremental" in message
    assert "Run the same command again" not in message and not fake.state.requests  # nothing downloaded
    report = fetch_exports(out, options(fake), progress=False)  # the fix it names
    assert report.files["classifications.csv"]["rows"] == 5 and verify_export(local, "classifications") == 5


def test_merge_keeps_multiline_records_whole(tmp_path):
    rec = records([1, 2])
    rec[1]["annotations"] = rec[1]["annotations"].replace("Normal clump", 'Normal\n"clump"')
    (tmp_path / "a.csv").write_bytes(export_csv(rec[:1]))
    (tmp_path / "b.csv").write_bytes(export_csv(rec))
    assert merge_classifications(tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "m.csv") == (1, 1)
    assert (tmp_path / "m.csv").read_bytes() == export_csv(rec)
    assert verify_export(tmp_path / "m.csv", "classifications") == 2
