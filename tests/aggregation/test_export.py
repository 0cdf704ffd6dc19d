"""The export reader: both front-end forms, viewers without marks, duplicates, versions, bad rows."""

import csv
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from clumptool.aggregation.export import ReadOptions, read_export
from clumptool.common.errors import ClumptoolError


def test_reads_both_front_end_forms_and_keeps_empty_viewers(export_builder, tmp_path):
    b = export_builder
    b.add(1, "alice", [(10.5, 20.25, 0), (30.0, 40.0, 1)])
    b.add(1, "bob", [(11.0, 21.0, 1)], fem=True)
    b.add(1, "carol", [])  # looked, clicked nothing
    data = read_export(b.write(tmp_path / "e.csv"))
    assert len(data.classifications) == 3
    assert sorted(data.classifications["n_marks"]) == [0, 1, 2]
    m = data.marks.sort_values(["x"]).reset_index(drop=True)
    assert m[["x", "y", "tool"]].values.tolist() == [[10.5, 20.25, 0], [11.0, 21.0, 1], [30.0, 40.0, 1]]
    assert data.report.task == "T1"
    assert data.frames[["image_width", "image_height"]].iloc[0].tolist() == [400.0, 400.0]


def test_anonymous_volunteers_and_repeat_classifications(export_builder, tmp_path):
    b = export_builder
    b.add(7, "anon1", [(5, 5, 0)], anonymous=True, created_at="2020-01-01 00:00:02 UTC")
    b.add(7, "anon1", [(6, 6, 0), (9, 9, 0)], anonymous=True, created_at="2020-01-01 00:00:01 UTC")  # first
    b.add(7, "dave", [(7, 7, 0)])
    data = read_export(b.write(tmp_path / "e.csv"))
    assert data.report.duplicates_dropped == 1
    assert len(data.classifications) == 2
    anon = data.volunteers[data.volunteers["anonymous"]]
    assert len(anon) == 1 and anon["user_key"].iloc[0].startswith("not-logged-in-")
    # the earlier classification (two marks) is the one kept
    assert sorted(data.marks["x"]) == [6, 7, 9]


def test_newest_workflow_version_by_default_and_explicit_version(export_builder, tmp_path):
    b = export_builder
    b.add(1, "a", [(1, 1, 0)], version="3.9")
    b.add(1, "b", [(2, 2, 0)], version="3.10")
    path = b.write(tmp_path / "e.csv")
    data = read_export(path)
    assert data.report.workflow_version == "3.10" and len(data.classifications) == 1
    assert data.report.rows_skipped["other workflow version"] == 1
    assert len(read_export(path, ReadOptions(workflow_version="3")).classifications) == 2
    with pytest.raises(ClumptoolError, match="no version 4"):
        read_export(path, ReadOptions(workflow_version="4"))


def test_several_workflows_need_a_choice(export_builder, tmp_path):
    b = export_builder
    b.add(1, "a", [(1, 1, 0)], workflow_id=11)
    b.add(1, "b", [(2, 2, 0)], workflow_id=12)
    path = b.write(tmp_path / "e.csv")
    with pytest.raises(ClumptoolError, match="several workflows"):
        read_export(path)
    assert len(read_export(path, ReadOptions(workflow_id=12)).classifications) == 1
    with pytest.raises(ClumptoolError, match="workflow id 99 is not in this export"):
        read_export(path, ReadOptions(workflow_id=99))


def test_bad_rows_are_counted_named_and_strict_makes_them_fatal(export_builder, tmp_path):
    b = export_builder
    b.add(1, "ok", [(10, 10, 0)])
    bad_json = b.add(1, "broken", None, raw_annotations='[{"task": "T1", "value": [')
    b.add(1, "nan", [(float("nan"), 3, 0)])
    outside = b.add(1, "out", [(500, 10, 0), (12, 12, 0)])
    b.add(1, "meta", None, raw_metadata="{not json")
    cut = b.add(1, "cut", None, raw_metadata='{"subject_dimensions": [{"naturalWidth": 400, "naturalHei')
    path = b.write(tmp_path / "e.csv")
    data = read_export(path)
    rep = data.report
    assert rep.rows_skipped["broken JSON in annotations"] == 1
    assert rep.rows_skipped["broken JSON in metadata"] == 2
    assert rep.marks_dropped["missing or NaN coordinates"] == 1
    assert rep.marks_dropped["outside the image"] == 1
    assert len(data.classifications) == 3  # ok, nan (a viewer), out
    messages = " | ".join(e["message"] for e in rep.examples)
    assert f"classification_id {bad_json}" in messages and "field 'annotations'" in messages
    assert f"classification_id {outside}" in messages
    assert f"classification_id {cut}" in messages
    with pytest.raises(ClumptoolError, match=rf"classification_id {bad_json}.*--strict"):
        read_export(path, ReadOptions(strict=True))


def test_a_row_cut_short_is_counted_and_does_not_choose_the_workflow_version(export_builder, tmp_path):
    b = export_builder
    b.add(1, "ok", [(10, 10, 0)])
    b.add(2, "ok2", [(11, 10, 0)])
    path = b.write(tmp_path / "e.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        first = next(itertools.islice(csv.reader(fh), 1, None))
    with open(path, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["999999"] + first[1:5])  # a truncated download: stops after workflow_id
    data = read_export(path)
    assert len(data.classifications) == 2
    assert data.report.workflow_version == first[6]
    assert data.report.rows_skipped["bad workflow_version"] == 1
    assert "classification_id 999999" in " | ".join(e["message"] for e in data.report.examples)


def test_missing_column_and_missing_file(export_builder, tmp_path):
    export_builder.add(1, "a", [(1, 1, 0)])
    cols = [c for c in __import__("clumptool.aggregation.export", fromlist=["x"]).EXPORT_COLUMNS if c != "annotations"]
    path = export_builder.write(tmp_path / "e.csv", columns=cols)
    with pytest.raises(ClumptoolError, match="missing column.*annotations"):
        read_export(path)
    with pytest.raises(ClumptoolError, match="file not found"):
        read_export(tmp_path / "nope.csv")


def test_other_tools_and_non_point_marks_are_not_merged(export_builder, tmp_path):
    b = export_builder
    poly = {"task": "T1", "taskType": "drawing", "value": [
        {"frame": 0, "toolIndex": 1, "toolType": "point", "x": 3, "y": 4},
        {"frame": 0, "toolIndex": 2, "toolType": "polygon", "points": [{"x": 1, "y": 2}]}]}
    b.add(1, "a", None, raw_annotations=json.dumps([poly]))
    b.add(1, "b", [(5, 5, 0), (6, 6, 2)])
    data = read_export(b.write(tmp_path / "e.csv"), ReadOptions(clump_tools=(0, 1)))
    assert data.report.marks_dropped["not a point mark"] == 1
    assert data.report.marks_dropped["other tool"] == 1
    assert sorted(data.marks["tool"]) == [0, 1]


def test_frames_keep_their_own_sizes(export_builder, tmp_path):
    b = export_builder
    b.add(1, "a", [(5, 5, 0, 1), (6, 6, 0, 0)], frames=2)
    data = read_export(b.write(tmp_path / "e.csv"))
    assert sorted(data.marks["frame"].tolist()) == [0, 1]
    assert len(data.frames) == 2


def test_worker_processes_give_the_same_tables_as_one_process(export_builder, tmp_path):
    """Batches parsed in a process pool are merged in file order: the tables of one process, exactly."""
    b = export_builder
    rng = np.random.default_rng(3)
    for i in range(120):
        user = f"user{rng.integers(15)}"
        marks = [(float(rng.uniform(0, 400)), float(rng.uniform(0, 400)), int(rng.integers(2)))
                 for _ in range(rng.integers(0, 4))]
        b.add(int(rng.integers(1, 25)), user, marks, fem=bool(i % 2), anonymous=bool(i % 7 == 0),
              version="12.34" if i % 5 else "12.30")
    b.add(3, "broken", [], raw_annotations="[{not json")
    path = b.write(tmp_path / "e.csv")
    one = read_export(path, ReadOptions(workers=1))
    two = read_export(path, ReadOptions(block_bytes=20_000, workers=2))  # ~7 record batches
    _assert_same(one, two)
    assert one.report.rows_skipped["broken JSON in annotations"] == 1
    assert one.report.rows_read == 121


def test_strict_is_fatal_in_worker_processes_too(export_builder, tmp_path):
    b = export_builder
    for i in range(40):
        b.add(i, f"u{i}", [(10, 10, 0)])
    b.add(99, "bad", [], raw_annotations="[{not json")
    with pytest.raises(ClumptoolError, match="annotations"):
        read_export(b.write(tmp_path / "e.csv"), ReadOptions(block_bytes=4000, workers=2, strict=True))


def _assert_same(one, two):
    for name in ("classifications", "marks", "frames", "volunteers", "subject_data"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name))
    assert one.report.as_dict() == two.report.as_dict()


def _tricky_export(b, n=30):
    """Rows whose fields hold raw newlines, CRLFs and doubled quotes inside quoted fields."""
    for i in range(n):
        name = f'vol "{i}"\nsecond line' if i % 3 == 0 else f"vol{i}"
        b.add(i % 6, name, [(10.0 + i, 20.0, i % 2)], fem=bool(i % 2), workflow_name='Clump\r\n"marking"\n')
    return b


@pytest.mark.parametrize("terminator, trailing", [("\r\n", True), ("\n", True), ("\n", False)])
def test_quoted_newlines_line_ends_and_small_batches(export_builder, tmp_path, terminator, trailing):
    """Multi-line quoted fields, both line endings and a missing final newline, in batches of one record or more."""
    src = _tricky_export(export_builder).write(tmp_path / "src.csv")
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    path = tmp_path / "e.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator=terminator).writerows(rows)
    if not trailing:
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
    one = read_export(path, ReadOptions(workers=1))
    assert one.report.rows_read == 30 and len(one.marks) == 30
    assert one.volunteers["user_name"].str.contains("\nsecond line").any()
    for block_bytes in (700, 2500):  # records are ~900 bytes: batches of one record, and of several
        seen = []
        two = read_export(path, ReadOptions(workers=2, block_bytes=block_bytes), progress=seen.append)
        _assert_same(one, two)
        assert sum(seen) == path.stat().st_size and len(seen) > 3


def test_byte_order_mark_and_header_only_files(export_builder, tmp_path):
    path = _tricky_export(export_builder, n=8).write(tmp_path / "e.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    one = read_export(path, ReadOptions(workers=1))
    assert one.report.rows_read == 8 and len(one.marks) == 8
    _assert_same(one, read_export(path, ReadOptions(workers=2, block_bytes=900)))
    header = tmp_path / "header.csv"
    header.write_bytes(path.read_bytes().split(b"\r\n")[0])
    for workers in (1, 2):
        with pytest.raises(ClumptoolError, match="no readable classifications"):
            read_export(header, ReadOptions(workers=workers))


def test_broken_csv_names_the_row_with_any_number_of_workers(export_builder, tmp_path):
    """An unclosed quote fails clearly, naming the file and the row, whatever the batching."""
    path = _tricky_export(export_builder).write(tmp_path / "e.csv")
    path.write_bytes(path.read_bytes() + b'1,"never closed\n')
    messages = set()
    for workers, block_bytes in ((1, 8 << 20), (2, 700), (2, 3000)):
        with pytest.raises(ClumptoolError, match="CSV structure is broken") as err:
            read_export(path, ReadOptions(workers=workers, block_bytes=block_bytes))
        messages.add(str(err.value))
    (message,) = messages
    assert str(path) in message and "quoted field that never closes" in message and "data row 31" in message


def test_a_row_with_too_many_fields_names_its_line(export_builder, tmp_path):
    path = _tricky_export(export_builder, n=6).write(tmp_path / "e.csv")
    with open(path, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["5000"] + ["x"] * 15)
    with pytest.raises(ClumptoolError, match="CSV structure is broken") as err:
        read_export(path)
    assert "has 16 fields where the header has 14" in str(err.value)


def test_a_file_cut_in_the_last_rows_subject_ids_is_refused_and_a_whole_one_without_line_end_is_read(
        export_builder, tmp_path):
    """The last field of an export is ``subject_ids``: a copy cut there (``9000`` of ``90000018``) still has every
    field, but its id is not the one its ``subject_data`` is keyed by."""
    for i in range(4):
        export_builder.add(90000018, f"vol{i}", [(10.0 + i, 20.0, 0)])
    whole = export_builder.write(tmp_path / "whole.csv").read_bytes()
    assert whole.endswith(b"90000018\r\n")
    (tmp_path / "cut.csv").write_bytes(whole[:-6])  # ...9000
    with pytest.raises(ClumptoolError, match=r"cut short in its last field") as err:
        read_export(tmp_path / "cut.csv")
    assert "classification_id 1004" in str(err.value) and "'9000'" in str(err.value)
    (tmp_path / "no_line_end.csv").write_bytes(whole[:-2])
    assert len(read_export(tmp_path / "no_line_end.csv").classifications) == 4


def test_an_export_with_no_usable_row_is_an_error_not_an_empty_consensus(export_builder, tmp_path):
    for i in range(3):
        export_builder.add(7, f"vol{i}", [(10.0, 20.0, 0)], subject_ids=f"galaxy-{i}")
    with pytest.raises(ClumptoolError, match=r"no usable classifications of workflow 99999 .* 3 bad subject_ids"):
        read_export(export_builder.write(tmp_path / "e.csv"))


def test_subject_ids_written_as_floats_are_the_same_subjects(export_builder, tmp_path):
    """A spreadsheet or a pandas round trip writes 7 as 7.0: the id rule every other table follows reads it as 7."""
    export_builder.add(7, "a", [(10.0, 20.0, 0)])
    export_builder.add(7, "b", [(11.0, 20.0, 0)], subject_ids="7.0")
    data = read_export(export_builder.write(tmp_path / "e.csv"))
    assert data.classifications["subject_id"].tolist() == [7, 7] and data.report.rows_skipped == {}


def test_an_export_missing_a_column_is_called_an_edited_export_not_sent_elsewhere(export_builder, tmp_path):
    export_builder.add(7, "a", [(10.0, 20.0, 0)])
    from clumptool.aggregation.export import EXPORT_COLUMNS

    path = export_builder.write(tmp_path / "e.csv", columns=[c for c in EXPORT_COLUMNS if c != "user_name"])
    with pytest.raises(ClumptoolError, match=r"missing column\(s\) user_name .* columns removed or renamed") as err:
        read_export(path)
    assert "give it as the argument" not in str(err.value)
