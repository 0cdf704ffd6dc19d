"""predict at scale on Lightning: 2 CPU processes = 1, a killed run resumes without recomputing finished shards,
catalogue formats (FITS/ECSV/VOTable with units and metadata), tables of image paths, the shard plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from clumptool.common.errors import ClumptoolError

sys.path.insert(0, os.path.dirname(__file__))
from tiny_projects import make_tiny_project  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 tiny 64 px galaxies (+ 32 hard-linked copies for the kill test) and a clump-happy random detector."""
    import torch

    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec

    root = tmp_path_factory.mktemp("scale")
    _, images, subjects = make_tiny_project(root, n=8)
    many = root / "many"
    many.mkdir()
    for k in range(40):
        os.link(images / f"{1000 + k % 8}.png", many / f"{5000 + k}.png")
    torch.manual_seed(0)
    spec = make_spec("resnet18", image_size=64, crop=None, fpn_channels=16, representation_size=32)
    model = build_model(spec)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0, 1.0]))
    model_dir = save_model(root / "model", model, spec)
    return root, images, many, model_dir


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "clumptool.cli", "predict", *map(str, args)]


ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_cpu_processes_give_the_same_catalogue_as_one(tiny, tmp_path):
    """--devices 2 without a GPU: Lightning DDP over gloo, 2 processes (the CLI re-run once per extra device)."""
    root, images, _, model = tiny
    base = ["--model", model, "--images", images, "--score-threshold", "0.3", "--shard-size", "2", "--overlay", "2"]
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        proc = subprocess.run(cli(*base, "--devices", n, "--out", out), capture_output=True, text=True,
                              timeout=600, env=ENV, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n] = (pd.read_parquet(out / "catalogue.parquet"), json.loads((out / "manifest.json").read_text()))
    (one, m1), (two, m2) = runs[1], runs[2]
    assert m1["info"]["world_size"] == 1 and m2["info"]["world_size"] == 2
    assert m2["info"]["shards"]["n_shards"] == 4 and len(one) > 0
    assert two["clump_id"].tolist() == list(range(len(two)))
    pd.testing.assert_frame_equal(one.drop(columns="clump_id"), two.drop(columns="clump_id"), atol=1e-4)
    assert set(one["subject_id"]) <= {str(1000 + i) for i in range(8)}
    assert not list(tmp_path.glob(".*"))  # no staging or shard folder left


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_finished_shards(tiny, tmp_path, monkeypatch):
    from clumptool.detection import shards
    from clumptool.detection.predict import predict_catalogue

    root, _, many, model = tiny
    out = tmp_path / "cat"
    shard_dir = tmp_path / ".cat.partial" / "shards"
    args = ["--model", model, "--images", many, "--score-threshold", "0.3", "--batch-size", "1",
            "--shard-size", "4", "--overlay", "0", "--devices", "cpu", "--out", out, "--quiet"]
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while len(list(shard_dir.glob("part-*.parquet"))) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    kept = {int(p.stem.split("-")[1]): p.stat().st_mtime_ns for p in shard_dir.glob("part-*.parquet")}
    assert 3 <= len(kept) < 10  # 40 images in 10 shards of 4: killed half way

    written: list[int] = []
    real_write = shards.ShardStore.write

    def spy(self, k, table):
        assert {int(p.stem.split("-")[1]): p.stat().st_mtime_ns for p in self.folder.glob("part-*.parquet")
                if int(p.stem.split("-")[1]) in kept} == kept  # finished shards untouched
        written.append(k)
        return real_write(self, k, table)

    monkeypatch.setattr(shards.ShardStore, "write", spy)
    res = predict_catalogue(model, many, out, score_threshold=0.3, batch_size=1, shard_size=4, n_overlay=0,
                            devices="cpu", progress=False)
    assert sorted(written) == sorted(set(range(10)) - set(kept))  # only the unfinished shards were computed
    assert res.n_shards_resumed == len(kept) and "resumed from an interrupted run" in res.summary()
    assert not shard_dir.parent.exists()
    monkeypatch.setattr(shards.ShardStore, "write", real_write)
    fresh = predict_catalogue(model, many, tmp_path / "fresh", score_threshold=0.3, batch_size=1, shard_size=4,
                              n_overlay=0, devices="cpu", progress=False)
    assert fresh.n_shards_resumed == 0
    pd.testing.assert_frame_equal(pd.read_parquet(res.catalogue_path), pd.read_parquet(fresh.catalogue_path))


def test_other_inputs_or_settings_never_reuse_shards(tmp_path):
    import pyarrow as pa

    from clumptool.detection.shards import ShardStore, plan_shards

    keys = [f"{i}\tx/{i}.png" for i in range(10)]
    a = plan_shards(keys, {"t": 0.5}, 4)
    assert (a.n_shards, a.bounds(2)) == (3, (8, 10)) and a == plan_shards(iter(keys), {"t": 0.5}, 4)
    assert len({a.fingerprint, plan_shards(keys, {"t": 0.4}, 4).fingerprint, plan_shards(keys[:9], {"t": 0.5}, 4)
                .fingerprint, plan_shards(keys, {"t": 0.5}, 5).fingerprint}) == 4
    store = ShardStore(tmp_path / "s", a)
    assert store.prepare() == [0, 1, 2]
    store.write(1, pa.table({"x": [1]}))
    (tmp_path / "s" / ".part-000002.parquet.tmp").write_bytes(b"half")  # a write cut short by a kill
    assert store.prepare() == [0, 2] and not list((tmp_path / "s").glob(".*"))
    other = ShardStore(tmp_path / "s", plan_shards(keys, {"t": 0.4}, 4))
    assert other.prepare() == [0, 1, 2] and not other.path(1).exists()


def test_catalogue_formats_carry_units_and_run_metadata(tiny, tmp_path):
    from astropy.table import Table

    from clumptool.aggregation.machine import read_detections
    from clumptool.detection.predict import predict_catalogue

    _, images, _, model = tiny
    ref = predict_catalogue(model, images, tmp_path / "pq", score_threshold=0.3, n_overlay=0, devices="cpu",
                            progress=False)
    cat = pd.read_parquet(ref.catalogue_path)
    import pyarrow.parquet as pq

    schema = pq.read_schema(ref.catalogue_path)
    assert schema.field("clump_centre_ra").metadata[b"unit"] == b"deg"
    assert len(cat) > 0
    for name, fmt in (("clumps.fits", None), ("clumps.ecsv", None), ("clumps.vot", None), ("", "fits")):
        out = tmp_path / fmt if fmt else tmp_path / name.split(".")[1] / name
        res = predict_catalogue(model, images, out, score_threshold=0.3, n_overlay=0, devices="cpu",
                                progress=False, fmt=fmt)
        path = res.catalogue_path
        assert path.name == (name or "catalogue.fits") and path.exists()
        assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, "galaxies.parquet", "manifest.json"])
        t = Table.read(path)
        assert len(t) == len(cat) and t.colnames == list(cat.columns)
        np.testing.assert_allclose(np.asarray(t["clump_score"], float), cat["clump_score"])
        assert str(t["clump_px_x1"].unit) == "pix" and str(t["galaxy_ra"].unit) == "deg"
        if path.suffix == ".vot":
            from astropy.io.votable import parse

            t.meta = {i.name: i.value for i in parse(str(path)).get_first_table().infos}
        assert t.meta["MODELVER"] == cat["model_version"].iloc[0] and float(t.meta["SCORETHR"]) == 0.3
        if path.suffix != ".vot":  # the detector's field, as aggregate --detections reads it
            assert read_detections(path).field == read_detections(ref.catalogue_path).field
    with pytest.raises(ClumptoolError, match="--format"):
        predict_catalogue(model, images, tmp_path / "x" / "c.fits", fmt="ecsv", devices="cpu")


def test_a_table_of_image_paths_with_sky_columns(tiny, tmp_path):
    from clumptool.detection.predict import predict_catalogue

    _, images, _, model = tiny
    files = sorted(images.glob("*.png"))
    rel = [os.path.relpath(p, tmp_path) for p in files]
    table = pd.DataFrame({"image_path": rel, "ra": 150.0 + np.arange(len(files)), "dec": 2.0,
                          "arcsecPerSide": 25.6, "FWHM_r_px": 3.0})
    table.to_parquet(tmp_path / "galaxies.parquet")
    res = predict_catalogue(model, tmp_path / "galaxies.parquet", tmp_path / "cat", score_threshold=0.3,
                            n_overlay=2, devices="cpu", progress=False)
    cat = pd.read_parquet(res.catalogue_path)
    assert res.n_images == 8 and len(cat) > 0 and cat["galaxy_ra"].notna().all()
    assert (cat["FWHM_r_px"] == 3.0).all() and cat["clump_centre_ra"].notna().all()
    folder = predict_catalogue(model, images, tmp_path / "cat2", score_threshold=0.3, n_overlay=0, devices="cpu",
                               progress=False)
    cols = ["subject_id", "clump_score", "clump_px_x1", "clump_px_y2"]
    pd.testing.assert_frame_equal(cat[cols], pd.read_parquet(folder.catalogue_path)[cols])

    table.loc[2, "image_path"] = "nowhere/9.png"
    table.to_csv(tmp_path / "galaxies.csv", index=False)
    with pytest.raises(ClumptoolError, match="1 of the 8 images listed in .*galaxies.csv do not exist: 9.*"
                                             "--allow-missing-images"):
        predict_catalogue(model, tmp_path / "galaxies.csv", tmp_path / "cat3", devices="cpu", progress=False)
    res = predict_catalogue(model, tmp_path / "galaxies.csv", tmp_path / "cat3", devices="cpu", progress=False,
                            allow_missing_images=True, n_overlay=0)
    assert res.n_images == 7 and res.n_missing_images == 1
    pd.DataFrame({"file": ["a.png"], "subject_id": [""]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"bad.csv.*row 2.*subject_id.*empty id"):
        predict_catalogue(model, tmp_path / "bad.csv", tmp_path / "cat4", devices="cpu", progress=False)


def test_devices_option():
    import torch

    from clumptool.detection.predicting import check_precision, parse_devices

    if not torch.cuda.is_available():
        assert parse_devices("2") == parse_devices("cpu,cpu")
        assert (parse_devices("2").accelerator, parse_devices("2").devices) == ("cpu", 2)
        assert parse_devices("auto").devices == 1
        with pytest.raises(ClumptoolError, match="--devices cuda: no CUDA device"):
            parse_devices("cuda")
        with pytest.raises(ClumptoolError, match="needs a GPU"):
            check_precision("bf16-mixed", parse_devices("cpu"))
    with pytest.raises(ClumptoolError, match="--devices cuda:7"):
        parse_devices("cuda:7")
    with pytest.raises(ClumptoolError, match="not understood"):
        parse_devices("tpu")
