"""The fake server serving a classification export: the builder the demo uses, and
``clumptool fake-panoptes --export`` for trying fetch-export and retire by hand."""

from __future__ import annotations

import signal
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from clumptool.active_learning.exports import FetchOptions, fetch_exports
from clumptool.active_learning.retire import RetireOptions, retire_finished
from clumptool.cli import main
from clumptool.testing.fake_panoptes import classification_record, export_csv

WF = 5678
SUBJECTS = (90000001, 90000002, 90000003)


def _export(tmp_path):
    data = export_csv([classification_record(i, SUBJECTS[i % 3], f"user{i}", [(100.0, 120.0, 0)])
                       for i in range(1, 10)])
    path = tmp_path / "classifications.csv"
    path.write_bytes(data)
    return path, data


def _finished_table(tmp_path):
    path = tmp_path / "subjects.csv"
    pd.DataFrame({"subject_id": SUBJECTS, "n_viewers": 3, "is_finished": [True, False, True],
                  "finished_reason": "test"}).to_csv(path, index=False)
    return path


def test_serve_classification_export_adds_its_subjects_once(fake, tmp_path):
    _, data = _export(tmp_path)
    assert sorted(fake.serve_classification_export(WF, data)) == [str(s) for s in SUBJECTS]
    assert fake.serve_classification_export(WF, data) == [], "subjects already in the workflow are not added again"
    report = fetch_exports(tmp_path / "fetched", FetchOptions(workflow_id=WF, endpoint=fake.url), progress=False)
    assert (tmp_path / "fetched" / "classifications.csv").read_bytes() == data
    assert report.files["classifications.csv"]["rows"] == 9
    retired = retire_finished(_finished_table(tmp_path), RetireOptions(workflow_id=WF, endpoint=fake.url,
                                                                       state=tmp_path / "state"), progress=False)
    assert retired.retired_now == 2 and not retired.unknown
    assert fake.state.retired(WF) == {"90000001": "consensus", "90000003": "consensus"}


def test_serve_classification_export_refuses_other_files(fake):
    with pytest.raises(ValueError, match="subject_ids"):
        fake.serve_classification_export(WF, b"a,b\n1,2\n")
    with pytest.raises(ValueError, match="workflow 9"):
        fake.serve_classification_export(9, export_csv([]))


def test_fake_panoptes_command_serves_an_export(panoptes_client, tmp_path, monkeypatch):
    """By hand: start the fake with --export, then fetch-export and retire against it."""
    path, data = _export(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "clumptool.cli", "fake-panoptes", "--port", "0",
                             "--export", f"{WF}={path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake Panoptes API at http://127.0.0.1:"), line + proc.stderr.read()
        assert f"serving {path} as workflow {WF}'s classification export (3 new subjects" in line
        url = line.split()[4]
        monkeypatch.setenv("PANOPTES_USERNAME", "clumpbot")
        monkeypatch.setenv("PANOPTES_PASSWORD", "s3cret")
        fetch_exports(tmp_path / "fetched", FetchOptions(workflow_id=WF, endpoint=url), progress=False)
        assert (tmp_path / "fetched" / "classifications.csv").read_bytes() == data
        retired = retire_finished(_finished_table(tmp_path), RetireOptions(workflow_id=WF, endpoint=url,
                                                                           state=tmp_path / "state"), progress=False)
        assert retired.retired_now == 2 and not retired.unknown
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("spec, expected", [
    ("{tmp}/missing.csv", r"--export .*missing.csv: cannot read .*give the path of a classification export"),
    ("99={tmp}/classifications.csv", r"--export 99=.*serves workflow 5678 only; give --workflow-id 99"),
    ("{tmp}/other.csv", r"--export .*other.csv: no subject_ids column.*give a Zooniverse classification export"),
])
def test_fake_panoptes_command_refuses_a_bad_export(tmp_path, spec, expected):
    import re

    _export(tmp_path)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    result = CliRunner().invoke(main, ["fake-panoptes", "--export", spec.format(tmp=tmp_path)])
    assert result.exit_code == 2, result.output
    assert re.search(expected, result.output.replace("\n", " ")), result.output
    assert "Traceback" not in result.output


def test_a_request_the_fake_fails_is_kept_and_fails_the_test_that_made_it(monkeypatch):
    """The fake's own bugs must not pass as the client's: its request exceptions are kept (not printed into a
    test's captured stderr) and ``logged_in_fake`` fails the test at teardown."""
    import urllib.error
    import urllib.request

    from clumptool.testing.panoptes_env import logged_in_fake

    with pytest.raises(AssertionError, match="the fake Panoptes server failed requests: .*broken route"):
        with logged_in_fake(monkeypatch, "clumpbot", "pw") as server:
            def broken(*args, **kwargs):
                raise RuntimeError("broken route")
            monkeypatch.setattr(server, "route", broken)
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                urllib.request.urlopen(f"{server.url}/api/projects", timeout=10)
            assert len(server.server_errors) == 1 and "broken route" in server.server_errors[0]
