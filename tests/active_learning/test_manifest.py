"""Cutouts at most 1 MiB and the manifest CSV in the panoptes CLI convention."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clumptool.active_learning.manifest import MAX_BYTES, subject_metadata, write_cutouts, write_manifest
from clumptool.common.errors import ClumptoolError


def noisy_png(path: Path, side: int, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (side, side, 3) if mode == "RGB" else (side, side)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_big_noisy_png_is_shrunk_below_one_mib(tmp_path):
    big = noisy_png(tmp_path / "big.png", 700)
    assert big.stat().st_size > MAX_BYTES
    small = noisy_png(tmp_path / "small.png", 32, seed=1)
    table = pd.DataFrame({"galaxy_id": ["BIG", "small"], "image_path": [str(big), str(small)]})
    out = write_cutouts(table, tmp_path / "cutouts")
    big_out, small_out = (Path(f) for f in out["file"])
    assert big_out == tmp_path / "cutouts" / "BIG.png"
    assert 0 < big_out.stat().st_size <= MAX_BYTES
    with Image.open(big_out) as im:
        im.verify()  # a valid PNG, not truncated
    with Image.open(big_out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        w, h = im.size
    scale = out.loc[0, "cutout_scale"]
    assert 0.5 < scale < 1 and (w, h) == (round(700 * scale),) * 2
    assert (out.loc[0, "cutout_width"], out.loc[0, "cutout_bytes"]) == (w, big_out.stat().st_size)
    # a PNG that already fits is copied byte for byte, not re-encoded
    assert small_out.read_bytes() == small.read_bytes() and out.loc[1, "cutout_scale"] == 1.0


def test_other_formats_and_modes_become_png(tmp_path):
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(arr).save(tmp_path / "deep.tif")
    rgba = np.random.default_rng(0).integers(0, 256, (40, 40, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    assert (tmp_path / "opaque.png").stat().st_size > 5300
    # an opaque RGBA PNG over the limit loses its useless alpha channel when re-encoded
    out = write_cutouts(pd.DataFrame({"galaxy_id": ["a/b", 7],
                                      "image_path": [tmp_path / "deep.tif", tmp_path / "opaque.png"]}),
                        tmp_path / "c", max_bytes=5300)
    with Image.open(out.loc[0, "file"]) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert np.asarray(im).max() == 255
    assert Path(out.loc[0, "file"]).name == "a_b.png"  # ids are made safe as file names
    with Image.open(out.loc[1, "file"]) as im:
        assert im.mode == "RGB" and im.size == (40, 40)  # fits without alpha: no downscaling
    assert out.loc[1, "cutout_scale"] == 1.0 and out.loc[1, "cutout_bytes"] <= 5300


def test_unreadable_image_names_the_galaxy(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ClumptoolError, match="galaxy_id G9.*not a readable image"):
        write_cutouts(pd.DataFrame({"galaxy_id": ["G9"], "image_path": [tmp_path / "bad.png"]}), tmp_path / "c")
    with pytest.raises(ClumptoolError, match="galaxy_id G8.*cannot read"):
        write_cutouts(pd.DataFrame({"galaxy_id": ["G8"], "image_path": [tmp_path / "nope.png"]}), tmp_path / "c")


def test_manifest_follows_the_panoptes_cli_convention(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    table = pd.DataFrame({
        "galaxy_id": [90000001, 90000002], "image_path": [noisy_png(images / f"{i}.png", 16, i) for i in (1, 2)],
        "score": [0.8123, np.float32(0.0412)], "strategy": ["bald", "random"], "rank": [1, 2],
        "control": [0, 1], "ra": [150.1234567891, 150.2], "dec": [2.2, np.nan], "model_version": "v3",
    })
    out = write_cutouts(table, tmp_path / "batch" / "cutouts")
    path = write_manifest(out, tmp_path / "batch" / "manifest.csv", round_name="3")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "#galaxy_id", "#al_round", "#acquisition", "#al_score", "#priority",
                       "#al_control", "#model_version", "ra", "dec"]
    assert rows[1] == ["cutouts/90000001.png", "90000001", "3", "bald", "0.8123", "1", "0", "v3", "150.1234567891", "2.2"]
    assert rows[2][:7] == ["cutouts/90000002.png", "90000002", "3", "random", "0.0412", "2", "1"]
    assert rows[2][9] == ""  # NaN stays empty
    # the CLI resolves files relative to the manifest: they must exist there
    assert all((path.parent / r[0]).is_file() for r in rows[1:])
    # the Python uploader gets the same metadata, with JSON types
    meta = subject_metadata(out.iloc[1], round_name="3")
    assert meta == {"#galaxy_id": "90000002", "#al_round": "3", "#acquisition": "random",
                    "#al_score": 0.0412, "#priority": 2, "#al_control": 1,
                    "#model_version": "v3", "ra": 150.2}
    assert isinstance(meta["#priority"], int) and isinstance(meta["#al_score"], float)


def test_manifest_refuses_oversized_or_missing_files(tmp_path):
    big = noisy_png(tmp_path / "big.png", 700)
    with pytest.raises(ClumptoolError, match=r"row 1.*over Zooniverse's limit of 1,048,576 bytes"):
        write_manifest(pd.DataFrame({"galaxy_id": ["a"], "file": [big]}), tmp_path / "m.csv")
    with pytest.raises(ClumptoolError, match="write the cutouts first"):
        write_manifest(pd.DataFrame({"galaxy_id": ["a"]}), tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
