"""The one id rule: every table gives the same id text for the same galaxy (never '101.0')."""

import numpy as np
import pandas as pd
import pytest

from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import (
    drop_blank_rows,
    normalise_subject_ids,
    read_subject_ids,
    subject_id_text,
    subject_ids_int64,
)


@pytest.mark.parametrize("value, text", [
    (101, "101"), (np.int64(101), "101"), (101.0, "101"), (np.float32(101.0), "101"), ("101.0", "101"),
    (" 101 ", "101"), ("101", "101"), ("galaxy_a", "galaxy_a"), (" galaxy_a ", "galaxy_a"), ("00101", "00101"),
    (101.5, "101.5"), ("-3.00", "-3"), (12345678901234, "12345678901234"),
])
def test_one_text_per_id(value, text):
    assert subject_id_text(value) == text


@pytest.mark.parametrize("value", [None, float("nan"), np.nan, pd.NA, "", "   "])
def test_blank_is_no_id(value):
    assert subject_id_text(value) is None


def test_nan_promoted_float_column_gives_integer_text():
    # a CSV column of integers with one blank row reads as float64: 101.0, 102.0, NaN
    df = pd.read_csv(__import__("io").StringIO("subject_id,split\n101,test\n102,test\n,\n"))
    assert df["subject_id"].dtype == float
    ids = normalise_subject_ids(drop_blank_rows(df)["subject_id"], where="s.csv")
    assert ids.tolist() == ["101", "102"]


def test_int64_and_object_columns_agree():
    a = normalise_subject_ids(pd.Series([101, 102], dtype="int64", name="subject_id"), where="a")
    b = normalise_subject_ids(pd.Series(["101.0", " 102 "], name="subject_id"), where="b")
    c = normalise_subject_ids(pd.Series([101, 102], dtype="Int64", name="subject_id"), where="c")
    assert a.tolist() == b.tolist() == c.tolist() == ["101", "102"]
    assert all(isinstance(v, str) for v in a)


def test_blank_id_in_a_row_names_file_row_and_field():
    s = pd.Series(["101", "", "103"], name="galaxy_id")
    with pytest.raises(ClumptoolError) as exc:
        normalise_subject_ids(s, where="pool.csv")
    msg = str(exc.value)
    assert "pool.csv" in msg and "row 3" in msg and "field 'galaxy_id'" in msg and "fill in" in msg


def test_row_numbers_follow_the_file_after_blank_lines_are_dropped(tmp_path):
    (tmp_path / "s.csv").write_text("subject_id,split\n101,test\n,\n,test\n")
    with pytest.raises(ClumptoolError, match=r"s\.csv, row 4, field 'subject_id'"):
        read_subject_ids(tmp_path / "s.csv")


def test_read_subject_ids_skips_blank_lines_and_repeats(tmp_path):
    (tmp_path / "s.csv").write_text("subject_id,split\n102,test\n101,test\n,\n102,train\n")
    assert read_subject_ids(tmp_path / "s.csv") == ["102", "101"]


def test_non_numeric_ids_are_text_but_not_zooniverse_ids():
    s = pd.Series(["101", "galaxy_a"], name="subject_id")
    assert normalise_subject_ids(s, where="t").tolist() == ["101", "galaxy_a"]
    with pytest.raises(ClumptoolError, match=r"t, row 3, field 'subject_id'.*'galaxy_a' is not an integer"):
        subject_ids_int64(s, where="t")


def test_int64_form_agrees_with_the_text_form():
    s = pd.Series([101.0, "102.0", " 103 "], name="subject_id")
    assert subject_ids_int64(s, where="t").tolist() == [101, 102, 103]
    assert subject_ids_int64(s, where="t").dtype == "int64"


def test_blank_rows_are_dropped_from_a_csv_with_a_true_false_column_that_has_blanks():
    """aggregate's subjects table as CSV: retired_on_zooniverse is blank where the subjects export did not list the
    subject, so the column reads back as text with NaN (a read-only mask under pandas' copy-on-write)."""
    import io

    from clumptool.common.ids import drop_blank_rows

    df = pd.read_csv(io.StringIO("subject_id,retired_on_zooniverse\n1,True\n2,\n3,False\n,\n"))
    assert drop_blank_rows(df)["subject_id"].tolist() == [1, 2, 3]
