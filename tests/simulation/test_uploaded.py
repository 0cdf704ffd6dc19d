"""The simulated classifications of an uploaded galaxy, rewritten for its new subject: new id, subject_data,
marks and natural size in the uploaded cutout's pixels, and back again through aggregation's frame mapping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clumptool.aggregation.frames import to_original_pixels
from clumptool.common.errors import ClumptoolError
from clumptool.simulation.uploaded import UploadedSubject, classifications_of_uploaded
from clumptool.testing.fake_panoptes import classification_record

MARKS = [(40.0, 30.0, 0), (121.0, 92.5, 1), (5.0, 50.0, 0)]  # original pixels; the last lies left of the crop


def _export() -> pd.DataFrame:
    rows = [classification_record(10 + i, sid, f"vol{i}", MARKS, workflow_id=99, size=(200, 160))
            for i, sid in enumerate([7, 8, 7, 7])]
    new_front_end = json.loads(rows[2]["annotations"])
    for m in new_front_end[0]["value"]:
        m["toolIndex"] = m.pop("tool")
    rows[2]["annotations"] = json.dumps(new_front_end)
    return pd.DataFrame(rows).astype(str)


UPLOADED = [UploadedSubject(subject_id=501, galaxy_id=7, width=95, height=80,
                            metadata={"#galaxy_id": "7", "#cutout_scale": 0.5, "#cutout_x0": 10.0, "ra": 1.5})]


def test_marks_and_sizes_in_the_cutout_frame_under_the_new_subject():
    out = classifications_of_uploaded(_export(), UPLOADED)
    assert out["classification_id"].tolist() == ["10", "12", "13"]  # galaxy 8 was not uploaded
    assert set(out["subject_ids"]) == {"501"}
    assert json.loads(out["subject_data"][0]) == {"501": {"retired": None, "#galaxy_id": "7", "#cutout_scale": 0.5,
                                                          "#cutout_x0": 10.0, "ra": 1.5}}
    for ann, meta in zip(out["annotations"], out["metadata"], strict=True):
        value = json.loads(ann)[0]["value"]
        assert [(m["x"], m["y"]) for m in value] == [(15.0, 15.0), (55.5, 46.25)]  # (x - 10) / 2, y / 2
        assert [m.get("tool", m.get("toolIndex")) for m in value] == [0, 1]
        dims = json.loads(meta)["subject_dimensions"][0]
        assert (dims["naturalWidth"], dims["naturalHeight"]) == (95, 80)
    # aggregation's mapping takes them back to the original pixels
    marks = pd.DataFrame({"subject_id": [501, 501], "x": [15.0, 55.5], "y": [15.0, 46.25]})
    frames = pd.DataFrame({"subject_id": [501], "frame": [0], "image_width": [95.0], "image_height": [80.0]})
    back, _ = to_original_pixels(marks, frames, pd.DataFrame({"subject_id": [501],
                                                              "subject_data": [out["subject_data"][0]]}))
    assert np.allclose(back[["x", "y"]].to_numpy(), [m[:2] for m in MARKS[:2]])
    assert _export()["subject_ids"].tolist() == ["7", "8", "7", "7"], "pure: the input is not changed"


def test_first_keeps_each_galaxys_earliest_classifications_and_bad_input_is_named():
    assert classifications_of_uploaded(_export(), UPLOADED, first=2)["classification_id"].tolist() == ["10", "12"]
    with pytest.raises(ClumptoolError, match="galaxies 9 were uploaded but the simulated export has no"):
        classifications_of_uploaded(_export(), [UploadedSubject(subject_id=502, galaxy_id=9, width=1, height=1)])
    with pytest.raises(ClumptoolError, match="first=0"):
        classifications_of_uploaded(_export(), UPLOADED, first=0)
