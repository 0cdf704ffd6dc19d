"""Robustness of ``clumptool aggregate``: duplicated input, nothing to work on, unreadable files, bad options,
interrupted writes. Each case: the exit code, a message naming the file/row/field or option and the fix, and
(for failures) the previous run's outputs byte-identical.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import warnings
from pathlib import Path

import pandas as pd
import pytest
from _aggregate_helpers import (
    clump_rows,
    interrupt_when,
    no_traceback,
    real_export,
    row,
    run_cli,
    small_export,
    snapshot,
    summary,
    write_export,
)

from clumptool.common.outputs import staging_path, verify_output_set


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished aggregate run (copied into each test that needs previous outputs)."""
    folder = tmp_path_factory.mktemp("template")
    out = folder / "out"
    r = run_cli("aggregate", small_export(folder / "good.csv"), "--out", out, "--quiet")
    assert r.code == 0, r.text
    return out


@pytest.fixture
def prev(finished_run, tmp_path):
    """A finished aggregate run in tmp/out (the outputs a failed run must leave as they were)."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    return out, snapshot(out)


def failed(r, *needles, out=None, before=None):
    """Exit 2, no traceback, every needle in the message, previous outputs untouched."""
    no_traceback(r)
    assert r.code == 2, r.text
    for n in needles:
        assert n in r.text, f"{n!r} not in:\n{r.text}"
    if out is not None:
        assert snapshot(out) == before


# --- 1. duplicated input --------------------------------------------------------------------------------------


def test_concatenated_export_gives_the_single_exports_result(tmp_path):
    single = small_export(tmp_path / "single.csv")
    doubled = tmp_path / "doubled.csv"
    lines = single.read_text().splitlines(keepends=True)
    doubled.write_text("".join(lines + lines[1:]))
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("aggregate", single, "--out", a, "--quiet").code == 0
    r = run_cli("aggregate", doubled, "--out", b)
    assert r.code == 0, r.text
    assert "12 duplicate rows (byte-identical copies of another row, dropped)" in r.out
    assert "marks read 48; used 24" in r.out and "24 in dropped duplicate rows" in r.out
    sa, sb = summary(a), summary(b)
    assert sb["export"]["duplicate_rows_dropped"] == 12
    for key in ("marks_used", "clumps_accepted", "classifications_used", "volunteers"):
        assert sa[key] == sb[key], key
    for table in ("clumps", "boxes"):
        assert pd.read_parquet(a / f"{table}.parquet").equals(pd.read_parquet(b / f"{table}.parquet"))


def test_exports_concatenated_with_their_headers(tmp_path):
    single = small_export(tmp_path / "single.csv")
    both = tmp_path / "both.csv"
    both.write_bytes(single.read_bytes() * 2)  # `cat a.csv a.csv > both.csv`: the header comes twice
    r = run_cli("aggregate", both, "--out", tmp_path / "o")
    assert r.code == 0, r.text
    assert "1 repeated header line" in r.out and "12 duplicate rows" in r.out
    assert summary(tmp_path / "o")["marks_used"] == 24


def test_one_repeated_row_is_dropped_and_counted(tmp_path):
    rows = clump_rows()
    path = write_export(tmp_path / "e.csv", rows + [rows[3]])
    r = run_cli("aggregate", path, "--out", tmp_path / "o")
    assert r.code == 0 and "1 duplicate rows" in r.out, r.text
    assert summary(tmp_path / "o")["marks_used"] == 2 * len(rows)


def test_two_different_rows_with_one_classification_id_are_refused(prev, tmp_path):
    out, before = prev
    rows = clump_rows()
    other = row(rows[2]["classification_id"], 101, "mallory", [(300.0, 300.0, 0)])
    path = write_export(tmp_path / "e.csv", rows + [other])
    r = run_cli("aggregate", path, "--out", out)
    failed(r, str(path), f"classification_id {rows[2]['classification_id']}", "data rows 3, 13",
           "--on-conflicting-duplicates keep-last", out=out, before=before)


def test_conflicting_rows_keep_last_when_asked(tmp_path):
    rows = clump_rows()
    cid = rows[2]["classification_id"]
    other = row(cid, 100, "mallory", [(300.0, 300.0, 0)])
    path = write_export(tmp_path / "e.csv", rows + [other])
    out = tmp_path / "o"
    r = run_cli("aggregate", path, "--out", out, "--on-conflicting-duplicates", "keep-last")
    assert r.code == 0, r.text
    assert "1 rows replaced by a later, different row" in r.out
    s = summary(out)
    assert s["export"]["conflicting_rows_replaced"] == 1
    assert s["marks_used"] == 2 * (len(rows) - 1) + 1  # the earlier row's two marks are gone, the later one's kept
    vols = pd.read_parquet(out / "volunteers.parquet")
    assert "mallory" in set(vols["user_name"])


# --- 2. nothing to work on ------------------------------------------------------------------------------------


def test_task_that_does_not_occur(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--task", "T9", "--out", out)
    failed(r, "task T9 (--task) does not occur", "task T1: drawing", "tool 0 point", "--task T", out=out,
           before=before)


def test_clump_tool_that_does_not_occur(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--clump-tools", "5", "--out", out)
    failed(r, "--clump-tools 5: no mark of tool 5", "tool 1 point 12", "--clump-tools I,J", out=out, before=before)


def test_question_only_export(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", real_export("question-task-classifications.csv", tmp_path), "--out", out)
    failed(r, "no task with point marks", "task T0: question", "--workflow-id W, --task T", out=out, before=before)


def test_cat_project_lists_its_tool_types(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", real_export("cat-project-classifications.csv", tmp_path), "--out", out)
    failed(r, "no task with point marks", "tool 0 freehandLine 165", "tool 1 polygon 19", out=out, before=before)


def test_cat_project_task_marks_are_not_point_marks_per_tool(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", real_export("cat-project-classifications.csv", tmp_path), "--task", "T0", "--out", out)
    failed(r, "not a point mark", "tool 0 (freehandLine)", "tool 1 (polygon)", "--clump-tools", out=out,
           before=before)
    assert "missing or NaN coordinates" not in r.text


def test_mixed_export_asks_which_workflow(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", real_export("mixed-projects-classifications.csv", tmp_path), "--out", out)
    failed(r, "several workflows", "--workflow-id", "workflow 371 \"Fossil Finder\"",
           "tool 0 rectangle 21", "task T0: survey", out=out, before=before)


def test_mixed_export_rectangles_used_by_their_centre_when_named(tmp_path):
    path = real_export("mixed-projects-classifications.csv", tmp_path)
    r = run_cli("aggregate", path, "--workflow-id", "4870", "--task", "T0", "--clump-tools", "0,1",
                "--out", tmp_path / "o")
    assert r.code == 0, r.text
    assert summary(tmp_path / "o")["marks_used"] == 63
    r = run_cli("aggregate", path, "--workflow-id", "4870", "--task", "T0", "--out", tmp_path / "o2")
    failed(r, "none of the 63 marks", "tool 1 (rectangle) 42", "--clump-tools")


def test_workflow_that_does_not_occur(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--workflow-id", "7", "--out", out)
    failed(r, "workflow id 7 is not in this export (--workflow-id)", "workflow 99999", out=out, before=before)


def test_every_mark_unusable(prev, tmp_path):
    out, before = prev
    bad = [(float("nan"), 5.0, 0), (float("inf"), 5.0, 0), (-3.0, 4.0, 0), (500.0, 3.0, 0), (5.0, 5.0, 0, 3)]
    rows = [row(2000 + i, 100, u, bad) for i, u in enumerate("abc")]
    r = run_cli("aggregate", write_export(tmp_path / "e.csv", rows), "--out", out)
    failed(r, "none of the 15 marks", "6 missing or NaN coordinates", "6 outside the image",
           "3 frame that does not exist", "classification_id 2000", "Fix those marks", out=out, before=before)


def test_newest_version_without_marks_points_to_workflow_version(prev, tmp_path):
    out, before = prev
    rows = clump_rows(version="3.1") + [row(5000, 100, "z", [], version="4.0")]
    r = run_cli("aggregate", write_export(tmp_path / "e.csv", rows), "--out", out)
    failed(r, "no usable mark in version 4.0", "--workflow-version", out=out, before=before)


def test_empty_galaxies_are_a_real_result_without_warnings(tmp_path):
    rows = [row(3000 + i, 100 + i % 3, u, []) for i, u in enumerate("abcdef")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = run_cli("aggregate", write_export(tmp_path / "e.csv", rows), "--out", tmp_path / "o")
    assert r.code == 0, r.text
    assert "volunteers marked nothing" in r.out and "RuntimeWarning" not in r.text
    assert summary(tmp_path / "o")["notes"] and len(pd.read_parquet(tmp_path / "o" / "boxes.parquet")) == 0


# --- 3. the output set is one unit ------------------------------------------------------------------------------


def test_rerun_with_csv_leaves_no_parquet(prev, tmp_path):
    out, _ = prev
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--out", out, "--format", "csv", "--quiet")
    assert r.code == 0, r.text
    assert not list(out.glob("*.parquet")) and len(list(out.glob("*.csv"))) == 4
    assert verify_output_set(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupt_while_writing_keeps_previous_outputs(prev, tmp_path, sig):
    out, before = prev
    export = write_export(tmp_path / "big.csv", clump_rows(n_subjects=40, users="abcdefgh"))
    stage = staging_path(out)
    backup = tmp_path / "previous"
    shutil.copytree(out, backup)
    for _ in range(5):  # the staging folder lives a fraction of a second: retry if the signal came too late
        r = interrupt_when(["aggregate", export, "--out", out, "--quiet"], ready=stage.exists, sig=sig)
        if r.hit:
            break
        shutil.rmtree(out)
        shutil.copytree(backup, out)
    assert r.hit, "the signal never arrived while the outputs were being written"
    assert r.code != 0
    no_traceback(r) if sig == signal.SIGINT else None
    assert snapshot(out) == before  # the previous set, byte for byte
    again = run_cli("aggregate", export, "--out", out, "--quiet")
    assert again.code == 0, again.text
    assert verify_output_set(out) == [] and not stage.exists()
    assert summary(out)["subjects"] == 40


def test_out_is_a_file_refused_before_reading(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    broken = tmp_path / "e.csv.gz"
    broken.write_bytes(gzip.compress(b"x"))
    r = run_cli("aggregate", broken, "--out", target)  # the export is never read: --out is checked first
    failed(r, "--out", "not a folder")
    assert target.read_text() == "mine"


def test_out_holding_the_users_files_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    before = snapshot(mine)
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--out", mine)
    failed(r, "--out", "thesis.tex", "choose a new or empty folder", out=mine, before=before)


def test_out_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--out", tmp_path / "f" / "out")
    failed(r, "--out", "cannot create the parent folder")


# --- 4. quietly less than asked ---------------------------------------------------------------------------------


def test_subject_without_classifications_is_listed(tmp_path):
    subjects = tmp_path / "subjects.csv"
    subjects.write_text('subject_id,metadata\n100,"{}"\n555,"{""#fwhmImagePix"": 3}"\n')
    out = tmp_path / "o"
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--subjects", subjects, "--out", out)
    assert r.code == 0, r.text
    assert "no classification in this export: 1" in r.out
    subj = pd.read_parquet(out / "subjects.parquet").set_index("subject_id")
    assert subj.loc[555, "n_viewers"] == 0 and not subj.loc[555, "is_finished"]
    assert summary(out)["subjects_without_classifications"] == 1 and summary(out)["subjects"] == 4


def test_marks_outside_or_on_missing_frames_counted_by_reason(tmp_path):
    rows = clump_rows()
    rows.append(row(9000, 100, "x", [(-1.0, 5.0, 0), (450.0, 5.0, 0), (5.0, 5.0, 0, 2)]))
    out = tmp_path / "o"
    r = run_cli("aggregate", write_export(tmp_path / "e.csv", rows), "--out", out)
    assert r.code == 0, r.text
    dropped = summary(out)["export"]["marks_dropped"]
    assert dropped["outside the image"] == 2 and dropped["frame that does not exist"] == 1
    assert "2 outside the image" in r.out and "1 frame that does not exist" in r.out


# --- 5. options and unreadable files ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["--eps", "-3", "--method", "dbscan"], "--eps -3"),
    (["--eps", "nan"], "--eps nan"),
    (["--min-samples", "0"], "--min-samples 0"),
    (["--min-cluster-size", "1", "--method", "hdbscan"], "--min-cluster-size 1"),
    (["--box-scale", "-1"], "--box-scale -1"),
    (["--box-size", "0"], "--box-size 0"),
    (["--link-radius", "0"], "--link-radius 0"),
    (["--max-false-pos-prob", "2"], "--max-false-pos-prob 2"),
    (["--odd-tools", "x"], "--odd-tools 'x'"),
    (["--odd-tools", "7"], "--odd-tools 7: no mark of tool 7"),
    (["--clump-tools", "-1"], "--clump-tools -1"),
    (["--drop-central", "-1"], "--drop-central -1"),
    (["--workflow-version", "new"], "--workflow-version 'new'"),
])
def test_bad_option_named(prev, tmp_path, args, needle):
    out, before = prev
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--out", out, *args)
    failed(r, needle, out=out, before=before)
    assert any(w in r.text for w in ("must be", "give", "use one of", "name the tool")), r.text


def test_latin1_byte_names_row_field_and_fix(prev, tmp_path):
    out, before = prev
    rows = clump_rows()
    rows[4]["user_name"] = "José"
    path = write_export(tmp_path / "e.csv", rows)
    path.write_bytes(path.read_bytes().replace("José".encode(), "José".encode("latin-1")))
    r = run_cli("aggregate", path, "--out", out)
    failed(r, str(path), "line 6", f"classification_id {rows[4]['classification_id']}", "field 'user_name'",
           "0xE9", "UTF-8", "iconv", out=out, before=before)


def test_missing_file(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", tmp_path / "nope.csv", "--out", out)
    failed(r, "nope.csv: file not found", "check the path", out=out, before=before)


def test_empty_file(prev, tmp_path):
    out, before = prev
    (tmp_path / "e.csv").write_bytes(b"")
    r = run_cli("aggregate", tmp_path / "e.csv", "--out", out)
    failed(r, "e.csv: empty file (0 bytes)", "download the export again", out=out, before=before)


def test_header_only_file(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", write_export(tmp_path / "e.csv", []), "--out", out)
    failed(r, "header but no rows", "download the export again", out=out, before=before)


def test_subjects_export_passed_as_classifications(prev, tmp_path):
    out, before = prev
    r = run_cli("aggregate", real_export("cat-project-subjects.csv", tmp_path), "--out", out)
    failed(r, "cat-project-subjects.csv: not a Zooniverse classification export", "missing column(s)",
           "pass it with --subjects", out=out, before=before)


def test_truncated_last_row_inside_a_quoted_field(prev, tmp_path):
    out, before = prev
    path = small_export(tmp_path / "e.csv")
    path.write_bytes(path.read_bytes()[:-300])
    r = run_cli("aggregate", path, "--out", out)
    failed(r, "data row 12", "never closes", "last row is cut short", "Download the export again", out=out,
           before=before)


def test_truncated_last_row_between_fields(prev, tmp_path):
    out, before = prev
    path = small_export(tmp_path / "e.csv")
    data = path.read_bytes().rstrip(b"\r\n")
    path.write_bytes(data[: data.rfind(b'","{') + 1])  # cut after the annotations field
    r = run_cli("aggregate", path, "--out", out)
    failed(r, "the last row (classification_id 1012)", "fields and no line end", "cut short", out=out,
           before=before)


def test_gzip_file(prev, tmp_path):
    out, before = prev
    path = small_export(tmp_path / "e.csv")
    gz = tmp_path / "e.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    r = run_cli("aggregate", gz, "--out", out)
    failed(r, "e.csv.gz: is gzip-compressed", "gunzip", out=out, before=before)


def test_summary_json_names_its_files_in_the_published_folder(finished_run):
    out = finished_run
    files = json.loads((out / "summary.json").read_text())["files"]
    assert all(Path(p).parent == out for p in files.values())


def test_classification_export_given_as_subjects(prev, tmp_path):
    out, before = prev
    export = small_export(tmp_path / "e.csv")
    r = run_cli("aggregate", export, "--subjects", export, "--out", out)
    failed(r, "no subject_id column", "(--subjects)", "looks like a Zooniverse *classification* export", out=out,
           before=before)


def test_subjects_with_a_latin1_byte(prev, tmp_path):
    out, before = prev
    subjects = tmp_path / "subjects.csv"
    subjects.write_bytes(b'subject_id,metadata\n100,"{}"\n101,"{""name"": ""Jos\xe9""}"\n')
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--subjects", subjects, "--out", out)
    failed(r, "subjects.csv: line 3 (data row 2, subject_id 101), field 'metadata'", "0xE9", "Re-save it as UTF-8",
           out=out, before=before)


def test_marks_but_no_clump_is_said_with_the_option_to_change(tmp_path):
    out = tmp_path / "o"
    r = run_cli("aggregate", small_export(tmp_path / "e.csv"), "--method", "hdbscan", "--out", out)
    assert r.code == 0, r.text  # possible in principle (every mark a false positive), so a result, said plainly
    assert "24 usable marks gave no accepted clump" in r.out and "--min-cluster-size 5" in r.out
    assert any("no accepted clump" in n for n in summary(out)["notes"])


def _sigint_inside_an_extension(*args, **kwargs):
    """What pyarrow's import did when SIGINT landed in it: the KeyboardInterrupt surfaced as a TypeError."""
    import os

    try:
        os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt at the next bytecode
        sum(range(1000))
    except KeyboardInterrupt:
        raise TypeError("expected a message argument") from None
    raise AssertionError("SIGINT was not delivered")


def test_a_ctrl_c_that_surfaces_as_another_exception_is_still_an_interrupt(monkeypatch, tmp_path):
    """Never a traceback for the user's Ctrl-C (exit 130); the same exception without one is a real bug and is
    not hidden."""
    from click.testing import CliRunner

    import clumptool.cli as cli

    export = small_export(tmp_path / "e.csv")
    monkeypatch.setattr(cli, "aggregate", _sigint_inside_an_extension)
    r = CliRunner().invoke(cli.main, ["aggregate", str(export), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 130 and "Aborted: interrupted" in r.output and r.exception is not None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    def plain_bug(*args, **kwargs):
        raise TypeError("a real bug")

    monkeypatch.setattr(cli, "aggregate", plain_bug)
    r = CliRunner().invoke(cli.main, ["aggregate", str(export), "--out", str(tmp_path / "out"), "--quiet"])
    assert isinstance(r.exception, TypeError) and "Aborted" not in r.output
