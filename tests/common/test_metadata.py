"""Hidden/private metadata prefixes (# and !) are read by the plain key name, in one place."""

import pytest

from clumptool.common.errors import ClumptoolError
from clumptool.common.metadata import (
    find_metadata_column,
    metadata_key,
    metadata_value,
    parse_metadata,
)


@pytest.mark.parametrize("name, plain", [("#fwhmImagePix", "fwhmImagePix"), ("!ra", "ra"), ("#!x", "x"),
                                         ("ra", "ra"), ("#", "#")])
def test_metadata_key(name, plain):
    assert metadata_key(name) == plain


def test_find_column_ignores_prefix_case_and_spaces():
    cols = ["subject_id", "RA, Dec", "#fwhmImagePix", "arcsecPerSide"]
    assert find_metadata_column(cols, "fwhmImagePix") == "#fwhmImagePix"
    assert find_metadata_column(cols, "!fwhmimagepix") == "#fwhmImagePix"
    assert find_metadata_column(cols, "ra,dec") == "RA, Dec"
    assert find_metadata_column(cols, "redshift") is None


def test_exact_plain_name_wins_over_folded_match():
    assert find_metadata_column(["RA", "ra"], "ra") == "ra"


def test_metadata_value_under_any_prefix():
    assert metadata_value({"#galaxy_id": "G1"}, "galaxy_id") == "G1"
    assert metadata_value({"galaxy_id": "G2"}, "galaxy_id") == "G2"
    assert metadata_value({"!galaxy_id": "G3"}, "#galaxy_id") == "G3"
    assert metadata_value({"ra": 1}, "galaxy_id", "none") == "none"


def test_parse_metadata_strips_prefixes_and_names_bad_cells():
    assert parse_metadata('{"#fwhmImagePix": 3.1, "ra": 10}', where="s.csv") == {"fwhmImagePix": 3.1, "ra": 10}
    assert parse_metadata("", where="s.csv") == {} and parse_metadata(float("nan"), where="s.csv") == {}
    with pytest.raises(ClumptoolError, match=r"s\.csv, row 4, field 'metadata': broken JSON"):
        parse_metadata("{oops", where="s.csv", row="row 4")
    with pytest.raises(ClumptoolError, match="expected a JSON object"):
        parse_metadata("[1, 2]", where="s.csv", row="row 4")
