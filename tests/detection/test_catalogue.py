"""Catalogue rows: columns in the paper's convention, sky positions by WCS (round trip), subject metadata."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clumptool.common.errors import ClumptoolError
from clumptool.common.wcs import pixel_to_sky, sky_to_pixel
from clumptool.detection.catalogue import (
    CATALOGUE_COLUMNS,
    SubjectSky,
    catalogue_rows,
    empty_catalogue,
    read_subject_sky,
    subject_sky_table,
    to_arrow,
)
from clumptool.detection.spec import CLASSES

SKY = SubjectSky(ra=150.123456, dec=-2.5, arcsec_per_side=80.0, fwhm_px=5.0)
BOXES = np.array([[10.0, 20.0, 22.5, 32.5], [180.0, 5.0, 192.0, 17.0], [95.0, 95.0, 105.0, 105.0]])


def test_columns_order_and_values():
    df = catalogue_rows("123", BOXES, [0.5, 0.9, 0.7], [1, 2, 1], 200, 200, CLASSES, SKY, first_id=10,
                        model_version="v1")
    assert tuple(df.columns) == CATALOGUE_COLUMNS
    for col in ("clump_id", "clump_label_id", "clump_label_name", "clump_score", "clump_centre_px_x",
                "clump_centre_px_y", "clump_px_x1", "clump_px_x2", "clump_px_y1", "clump_px_y2", "clump_centre_ra",
                "clump_centre_dec", "galaxy_ra", "galaxy_dec", "FWHM_r_px", "subject_id"):
        assert col in df.columns
    assert df["clump_score"].tolist() == [0.9, 0.7, 0.5]  # highest score first
    assert df["clump_id"].tolist() == [10, 11, 12]
    assert df["clump_label_name"].tolist() == ["odd_clump", "clump", "clump"]
    first = df.iloc[0]
    assert (first.clump_px_x1, first.clump_px_x2, first.clump_px_y1, first.clump_px_y2) == (180, 192, 5, 17)
    assert (first.clump_centre_px_x, first.clump_centre_px_y) == (186.0, 11.0)
    assert first.pixel_scale_arcsec == pytest.approx(0.4) and first.FWHM_r_px == 5.0
    assert first.subject_id == "123" and first.model_version == "v1"
    assert to_arrow(df).num_rows == 3


def test_wcs_round_trip_and_galaxy_centre():
    df = catalogue_rows("1", BOXES, [0.5, 0.9, 0.7], [1, 1, 1], 200, 200, CLASSES, SKY)
    x, y = sky_to_pixel(df["clump_centre_ra"].to_numpy(), df["clump_centre_dec"].to_numpy(), SKY.ra, SKY.dec, 0.4,
                        200, 200)
    np.testing.assert_allclose(x, df["clump_centre_px_x"], atol=1e-6)
    np.testing.assert_allclose(y, df["clump_centre_px_y"], atol=1e-6)
    centre = df[df["clump_px_x1"] == 95.0].iloc[0]  # the box centred on the image centre (100, 100)
    assert centre.clump_centre_ra == pytest.approx(SKY.ra, abs=1e-10)
    assert centre.clump_centre_dec == pytest.approx(SKY.dec, abs=1e-10)
    assert (df["galaxy_ra"] == SKY.ra).all() and (df["galaxy_dec"] == SKY.dec).all()
    # east is left: a clump right of centre has smaller ra; up (smaller y) is north
    right = df[df["clump_px_x1"] == 180.0].iloc[0]
    assert right.clump_centre_ra < SKY.ra and right.clump_centre_dec > SKY.dec
    ra, dec = pixel_to_sky(np.array([186.0]), np.array([11.0]), SKY.ra, SKY.dec, 0.4, 200, 200)
    assert right.clump_centre_ra == ra[0] and right.clump_centre_dec == dec[0]


def test_without_sky_the_sky_columns_are_nan():
    df = catalogue_rows("1", BOXES, [0.5, 0.9, 0.7], [1, 1, 1], 200, 200, CLASSES, None)
    assert df[["clump_centre_ra", "clump_centre_dec", "galaxy_ra", "galaxy_dec", "FWHM_r_px"]].isna().all().all()
    assert np.isfinite(df["clump_centre_px_x"]).all()


def test_no_detections_and_empty_catalogue_types():
    df = catalogue_rows("1", np.zeros((0, 4)), [], [], 64, 64, CLASSES, SKY)
    assert len(df) == 0 and tuple(df.columns) == CATALOGUE_COLUMNS
    assert to_arrow(df).num_rows == 0
    assert tuple(empty_catalogue().columns) == CATALOGUE_COLUMNS


def test_subject_sky_from_a_zooniverse_subjects_export(tmp_path):
    meta = {"ra": 150.5, "dec": 2.25, "#fwhmImagePix": 4.5, "#arcsecPerSide": 79.2}
    pd.DataFrame({"subject_id": [77, 78], "metadata": [json.dumps(meta), json.dumps({"#fwhmImagePix": 3})]}).to_csv(
        tmp_path / "subjects.csv", index=False)
    sky = read_subject_sky(tmp_path / "subjects.csv")
    assert sky["77"] == SubjectSky(ra=150.5, dec=2.25, arcsec_per_side=79.2, fwhm_px=4.5)
    assert np.isnan(sky["78"].ra) and sky["78"].fwhm_px == 3.0


def test_combined_ra_dec_field_and_bad_value():
    sky = subject_sky_table(pd.DataFrame({"subject_id": [5], "ra, dec": ["150.1, -1.5"], "arcsecPerSide": [80]}))
    assert (sky["5"].ra, sky["5"].dec, sky["5"].arcsec_per_side) == (150.1, -1.5, 80.0)
    with pytest.raises(ClumptoolError, match="subject_id 6.*ra, dec"):
        subject_sky_table(pd.DataFrame({"subject_id": [6], "ra, dec": ["somewhere"]}), source="s.csv")


def test_catalogue_sky_positions_agree_with_the_simulators_truth(tmp_path):
    """A detection exactly on an injected clump gets the ra/dec the simulator recorded for it."""
    from clumptool.aggregation.boxes import square_boxes
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project

    simulate_project(tmp_path / "sim", SimulationConfig(galaxies=5, volunteers_per_subject=2, image_size=200,
                                                        images=False, clumpy_fraction=1.0, seed=3))
    truth = pd.read_csv(tmp_path / "sim" / "truth.csv")
    sky = read_subject_sky(tmp_path / "sim" / "subjects.csv")
    assert len(truth) > 0
    for sid, g in truth.groupby("subject_id"):
        boxes = square_boxes(g["x"].to_numpy(), g["y"].to_numpy(), 2.5 * g["fwhm_px"].to_numpy())
        scores = np.linspace(1.0, 0.5, len(g))  # keeps the truth order (rows come highest score first)
        df = catalogue_rows(str(sid), boxes, scores, g["label"].to_numpy(), 200, 200, CLASSES, sky[str(sid)])
        np.testing.assert_allclose(df["clump_centre_ra"], g["ra"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(df["clump_centre_dec"], g["dec"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(df["FWHM_r_px"], g["fwhm_px"], atol=1e-4)
