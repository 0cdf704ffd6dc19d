"""A round trip through a downscaled upload: marks made on the uploaded cutout come back as the same clumps
in the original image's pixels.

The galaxy's image is too big for the byte limit, so write_cutouts downscales it; the upload (real
panoptes-client, fake Zooniverse) records the scale in hidden subject metadata; volunteers mark the clumps
on the small image; the export (fetched with fetch-export) carries the metadata in ``subject_data``; and
aggregate maps the marks back before the consensus.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clumptool.active_learning.exports import FetchOptions, fetch_exports
from clumptool.active_learning.ledger import Ledger
from clumptool.active_learning.manifest import cutout_metadata, write_cutouts
from clumptool.active_learning.zooniverse import UploadConfig, upload_selection
from clumptool.aggregation.frames import cutout_frames, to_original_pixels
from clumptool.aggregation.pipeline import aggregate
from clumptool.common.errors import ClumptoolError
from clumptool.testing.fake_panoptes import classification_record, export_csv

TRUTH = np.array([[40.0, 30.0], [121.0, 92.5], [80.5, 61.0]])  # clumps, in the original image's pixels


def test_marks_on_a_downscaled_upload_come_back_in_original_pixels(fake, tmp_path):
    rng = np.random.default_rng(3)
    original = tmp_path / "pool" / "G1.png"
    original.parent.mkdir()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(original)
    sel = write_cutouts(pd.DataFrame({"galaxy_id": ["G1"], "image_path": [str(original)]}), tmp_path / "cutouts",
                        max_bytes=15_000)
    width, height = int(sel["cutout_width"][0]), int(sel["cutout_height"][0])
    assert width < 120, "the cutout was downscaled"
    config = UploadConfig(project_id=1234, workflow_id=5678, subject_set_name="round 1", endpoint=fake.url,
                          max_bytes=15_000)
    report = upload_selection(sel, Ledger(tmp_path / "ledger.sqlite"), "round-1", config, progress=False)
    assert report.ok, report.format()
    (subject,) = fake.state.subjects.values()
    meta = subject["metadata"]
    assert meta["#cutout_scale"] == pytest.approx(width / 160)
    assert meta.get("#cutout_scale_y", meta["#cutout_scale"]) == pytest.approx(height / 120)

    # six volunteers mark the three clumps on the uploaded (small) image, within 0.2 px
    scale = np.array([width / 160, height / 120])
    rows = []
    for v in range(6):
        shown = TRUTH * scale + rng.normal(0, 0.2, TRUTH.shape)
        marks = [(x, y, 0) for x, y in shown]
        rows.append(classification_record(100 + v, subject["id"], f"vol{v}", marks, size=(width, height),
                                          subject_metadata=meta))
    fake.publish_export("workflows", 5678, "classifications", export_csv(rows))
    fetch_exports(tmp_path / "exports", FetchOptions(workflow_id=5678, endpoint=fake.url), progress=False)

    result = aggregate(tmp_path / "exports" / "classifications.csv")
    clumps = result.clumps[result.clumps["accepted"]]
    assert len(clumps) == 3
    found = clumps[["x", "y"]].to_numpy()
    for truth in TRUTH:
        assert np.min(np.hypot(*(found - truth).T)) < 1.0, f"clump {truth} not found in original pixels: {found}"
    assert np.min(np.hypot(*(found - TRUTH[1] * scale).T)) > 20, "unmapped positions would be far off"


def test_mapping_rules():
    assert cutout_metadata({"cutout_scale": 1.0, "cutout_scale_y": 1.0}) == {}
    assert cutout_metadata({"cutout_scale": 0.5, "cutout_scale_y": 0.5}) == {"#cutout_scale": 0.5}
    assert cutout_metadata({"cutout_scale": 0.5, "cutout_scale_y": 0.25, "cutout_x0": 10, "cutout_y0": 0}) == {
        "#cutout_scale": 0.5, "#cutout_scale_y": 0.25, "#cutout_x0": 10.0}
    sd = pd.DataFrame({"subject_id": [1, 2, 3], "subject_data": [
        json.dumps({"1": {"#cutout_scale": 0.5, "#cutout_x0": 10}}), json.dumps({"2": {"ra": 1.0}}),
        json.dumps({"3": {"!cutout_scale": 0.25, "cutout_scale_y": 0.5}})]})
    marks = pd.DataFrame({"subject_id": [1, 2, 3], "x": [4.0, 4.0, 4.0], "y": [6.0, 6.0, 6.0]})
    frames = pd.DataFrame({"subject_id": [1, 2, 3], "frame": 0, "image_width": 100.0, "image_height": 50.0})
    m, f = to_original_pixels(marks, frames, sd)
    assert m[["x", "y"]].to_numpy().tolist() == [[18.0, 12.0], [4.0, 6.0], [16.0, 12.0]]
    assert f[["image_width", "image_height"]].to_numpy().tolist() == [[200.0, 100.0], [100.0, 50.0], [400.0, 100.0]]
    assert marks["x"].tolist() == [4.0, 4.0, 4.0], "pure: the input is not changed"
    bad = pd.DataFrame({"subject_id": [7], "subject_data": [json.dumps({"7": {"#cutout_scale": 0}})]})
    with pytest.raises(ClumptoolError, match="subject 7: subject_data #cutout_scale is 0, not a positive number"):
        cutout_frames(bad)
