"""Labelled galaxies, negatives, split, crop clipping, and boxes that follow their pixels under the 8 symmetries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clumptool.common.errors import ClumptoolError
from clumptool.detection.data import (
    Augment,
    DetectionDataset,
    Item,
    count_in_progress,
    count_unclassified,
    labelled_items,
    read_boxes,
    split_items,
)
from clumptool.detection.spec import make_spec


def _one_clump_image(tmp_path, size=80):
    arr = np.zeros((size, size, 3), np.uint8)
    arr[20:24, 30:34] = 255  # original box [30, 20, 34, 24]
    path = tmp_path / "7.png"
    Image.fromarray(arr).save(path)
    return Item("7", path, np.array([[30.0, 20.0, 34.0, 24.0], [0.0, 0.0, 6.0, 6.0]]), np.array([1, 2]))


@pytest.mark.parametrize("cache", [False, True])
def test_boxes_follow_pixels_under_symmetries(tmp_path, cache):
    item = _one_clump_image(tmp_path)
    spec = make_spec("resnet18", image_size=32, crop=64)  # offset 8, scale 0.5
    ds = DetectionDataset([item], spec, Augment(gamma=(1, 1), gain=(1, 1), noise=0.0), cache=cache)
    seen = set()
    for epoch in range(60):  # augmentations draw from (seed, epoch, index): new every epoch
        im, target, sid = ds[(epoch, 0)]
        assert sid == "7" and im.shape == (3, 32, 32)
        # the corner box lies mostly outside the 64 px crop: dropped; the clump box is kept
        assert target["labels"].tolist() == [1]
        ys, xs = np.nonzero(im[0].numpy() > 0.5)
        bright = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert tuple(target["boxes"][0].tolist()) == bright
        seen.add(bright)
    assert len(seen) == 8  # all eight orientations were drawn, each with its box on the clump


def test_augmentations_repeat_for_the_same_epoch(tmp_path):
    """Exact resume: an epoch's augmentations depend on (seed, epoch, index) only, not on what ran before."""
    import torch

    item = _one_clump_image(tmp_path)
    ds = DetectionDataset([item], make_spec("resnet18", image_size=32, crop=64), Augment(), seed=3)
    first = ds[(5, 0)][0]
    torch.manual_seed(123)  # global RNG state must not matter
    assert torch.equal(first, ds[(5, 0)][0])
    assert not torch.equal(first, ds[(6, 0)][0])


def test_augment_noise_and_stretch_stay_in_range(tmp_path):
    item = _one_clump_image(tmp_path)
    ds = DetectionDataset([item], make_spec("resnet18", image_size=32, crop=64), Augment())
    im, target, _ = ds[0]
    assert float(im.min()) >= 0 and float(im.max()) <= 1 and len(target["boxes"]) == 1
    plain = DetectionDataset([item], make_spec("resnet18", image_size=32, crop=64), None)[0][0]
    assert plain[0, 6:8, 11:13].min() > 0.5 and plain[0, 0, 0] == 0.0  # original [30, 20, 34, 24] / 2 - 4


def test_labelled_items_keep_negatives(tiny_project):
    boxes, images, subjects = tiny_project
    items = labelled_items(boxes, images, subjects)
    assert len(items) == 8
    n_boxes = {it.subject_id: len(it.boxes) for it in items}
    assert n_boxes["1000"] == 0 and n_boxes["1003"] == 0 and sum(n_boxes.values()) == len(pd.read_csv(boxes))
    # without --subjects every image in the folder is labelled
    assert [it.subject_id for it in labelled_items(boxes, images)] == [it.subject_id for it in items]


def test_labelled_items_errors(tiny_project, tmp_path):
    boxes, images, subjects = tiny_project
    df = pd.read_csv(boxes)
    bad = tmp_path / "bad.csv"
    pd.concat([df, df.iloc[:1].assign(subject_id=999)]).to_csv(bad, index=False)
    with pytest.raises(ClumptoolError, match="no image"):
        labelled_items(bad, images)
    df.assign(x2=df["x1"] - 1).to_csv(bad, index=False)
    with pytest.raises(ClumptoolError, match="row 2, field .x2.: box has x2 <= x1"):
        read_boxes(bad)
    df.assign(label=5).to_csv(bad, index=False)
    with pytest.raises(ClumptoolError, match="field 'label'"):
        read_boxes(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClumptoolError, match="no images"):
        labelled_items(boxes, tmp_path / "empty")
    pd.DataFrame({"subject_id": [1000, 5555]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ClumptoolError, match="5555"):
        labelled_items(boxes, images, tmp_path / "s.csv")


def test_split_by_galaxy_is_reproducible():
    items = [Item(str(i), None, np.zeros((0, 4)), np.zeros(0)) for i in range(50)]
    tr, va = split_items(items, 0.2, seed=3)
    tr2, va2 = split_items(list(reversed(items)), 0.2, seed=3)
    assert len(va) == 10 and [i.subject_id for i in va] == [i.subject_id for i in va2]
    assert not {i.subject_id for i in tr} & {i.subject_id for i in va}
    assert [i.subject_id for i in split_items(items, 0.2, seed=4)[1]] != [i.subject_id for i in va]


def test_labelled_items_from_a_dataframe(tiny_project):
    boxes, images, subjects = tiny_project
    df = pd.read_csv(boxes)  # integer subject ids, as aggregate writes them
    items = labelled_items(df, images, subjects)
    assert sum(len(it.boxes) for it in items) == len(df)
    with pytest.raises(ClumptoolError, match="missing column"):
        labelled_items(df.drop(columns=["label"]), images)


def test_unclassified_subjects_are_neither_labelled_nor_negatives(tiny_project, tmp_path):
    """aggregate's subjects table lists subjects nobody classified (n_viewers 0): train must leave them out,
    or a held-out galaxy would be trained on as empty background."""
    boxes, images, subjects = tiny_project
    st = pd.read_csv(subjects) if str(subjects).endswith(".csv") else pd.read_parquet(subjects)
    st["n_viewers"] = 20
    unclassified = str(st["subject_id"].iloc[-1])
    st.loc[st.index[-1], "n_viewers"] = 0
    table = read_boxes(boxes)
    table = table[table["subject_id"] != unclassified]
    table.to_csv(tmp_path / "boxes.csv", index=False)
    st.to_csv(tmp_path / "subjects.csv", index=False)
    ids = [it.subject_id for it in labelled_items(tmp_path / "boxes.csv", images, tmp_path / "subjects.csv")]
    assert unclassified not in ids
    assert len(ids) == len(st) - 1
    assert count_unclassified(tmp_path / "subjects.csv") == 1


def test_galaxies_still_being_classified_are_left_out_with_their_boxes(tiny_project, tmp_path):
    """In a lean project most galaxies have had one or two volunteers at any time: aggregate marks them
    in_progress, and train leaves them (and the boxes their first volunteers gave them) out unless asked."""
    boxes, images, subjects = tiny_project
    st = pd.read_csv(subjects) if str(subjects).endswith(".csv") else pd.read_parquet(subjects)
    table = read_boxes(boxes)
    with_boxes = sorted(set(table["subject_id"]))
    st["n_viewers"] = 20
    st["in_progress"] = st["subject_id"].astype(str) == with_boxes[0]  # CSV: "True"/"False" text
    st.to_csv(tmp_path / "subjects.csv", index=False)
    items = labelled_items(boxes, images, tmp_path / "subjects.csv")
    assert with_boxes[0] not in {it.subject_id for it in items} and len(items) == len(st) - 1
    assert count_in_progress(tmp_path / "subjects.csv") == 1
    everything = labelled_items(boxes, images, tmp_path / "subjects.csv", include_in_progress=True)
    assert len(everything) == len(st)
    kept = {it.subject_id: len(it.boxes) for it in everything}
    assert kept[with_boxes[0]] == int((table["subject_id"] == with_boxes[0]).sum()) > 0
    st["in_progress"] = True
    st.to_csv(tmp_path / "all.csv", index=False)
    with pytest.raises(ClumptoolError, match="still being classified.*--include-in-progress"):
        labelled_items(boxes, images, tmp_path / "all.csv")
    st["in_progress"] = "maybe"
    st.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ClumptoolError, match=r"bad\.csv.*in_progress.*not true or false"):
        labelled_items(boxes, images, tmp_path / "bad.csv")
    st["in_progress"] = (st["subject_id"].astype(str) == with_boxes[0]).astype("boolean")
    st.loc[st.index[0], "in_progress"] = pd.NA  # blank: not "not in progress" (it would train on the galaxy)
    st.to_parquet(tmp_path / "blank.parquet")
    with pytest.raises(ClumptoolError, match=r"blank\.parquet, subject_id .*, field 'in_progress': blank"):
        labelled_items(boxes, images, tmp_path / "blank.parquet")


def test_uploaded_subjects_train_on_their_galaxys_image_and_a_second_subject_of_a_galaxy_is_left_out(tiny_project,
                                                                                                   tmp_path):
    """select-next-batch uploads galaxy 1001 as subject 5001 and galaxy 1002 as subject 5002 (its marks come back in
    the galaxy's pixels): their boxes train on the galaxies' images. 1002 was labelled before (20 classifications),
    so its second subject, with 6, is left out with its boxes: one image, one label."""
    from clumptool.detection.data import count_repeated_galaxies

    boxes, images, _ = tiny_project
    table = read_boxes(boxes)
    moved = table[table["subject_id"].isin(["1001", "1002"])].copy()
    moved["subject_id"] = moved["subject_id"].map({"1001": "5001", "1002": "5002"})
    rest = table[~table["subject_id"].isin(["1001"])]
    pd.concat([rest, moved]).to_csv(tmp_path / "boxes.csv", index=False)
    ids = [1000, *range(1002, 1008), 5001, 5002]
    pd.DataFrame({"subject_id": ids, "n_viewers": [20] * 7 + [8, 6],
                  "galaxy_id": [None] * 7 + ["1001", "1002.0"]}).to_csv(tmp_path / "subjects.csv", index=False)
    items = {it.subject_id: it for it in labelled_items(tmp_path / "boxes.csv", images, tmp_path / "subjects.csv")}
    assert "5001" in items and items["5001"].path.name == "1001.png"
    assert len(items["5001"].boxes) == int((table["subject_id"] == "1001").sum()) > 0
    assert "5002" not in items and items["1002"].path.name == "1002.png"  # the one with 20 classifications
    assert count_repeated_galaxies(tmp_path / "subjects.csv", images) == 1
