"""The demo's Zooniverse steps on a tiny simulated project: fetch-export from the fake server, aggregate,
retire, replay (demo.py 1-5), then the loop closed (10-11): the uploaded galaxies' classifications come back
under their new subject ids, fetch-export --incremental adds them without duplicates, their consensus matches
the truth, and round 2 retires only finished galaxies without re-sending round 1's. The training steps are
covered by the detection tests and ``make demo``; here the upload is the one select-next-batch makes
(``upload_selection``), of downscaled cutouts so that the marks' frame mapping is exercised too."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clumptool import demo
from clumptool.active_learning.exports import FetchOptions, fetch_exports
from clumptool.active_learning.ledger import DEFAULT_LEDGER_NAME, Ledger
from clumptool.active_learning.manifest import write_cutouts
from clumptool.active_learning.zooniverse import UploadConfig, upload_selection
from clumptool.simulation.config import SimulationConfig
from clumptool.testing.fake_panoptes import FakePanoptes


@dataclass
class Round1:
    """The demo's first steps done on a tiny project, with the fake Zooniverse still running."""

    cfg: demo.DemoConfig
    sim: SimulationConfig
    res: demo.DemoResult
    lines: list[str]
    split: dict
    project: Path
    fake: FakePanoptes
    export: Path
    agg: object
    retired: dict


@contextlib.contextmanager
def round_1(tmp_path: Path, cfg: demo.DemoConfig) -> Iterator[Round1]:
    """Steps 1-4 (simulate, fetch-export, aggregate, retire) against a fake Zooniverse, as run_demo does."""
    sim = SimulationConfig(galaxies=cfg.galaxies, seed=cfg.seed, image_size=cfg.sim_image_size)
    res = demo.DemoResult(out_dir=tmp_path)
    lines: list[str] = []
    split = demo._simulate(tmp_path, cfg, sim, res, lines.append)
    project = tmp_path / "project"
    with FakePanoptes(users={demo.DEMO_USER: demo.DEMO_PASSWORD}, projects={sim.project_id: (sim.workflow_id,)},
                      state_dir=tmp_path / "fake") as fake, demo.panoptes_credentials(demo.DEMO_USER,
                                                                                      demo.DEMO_PASSWORD):
        export = demo._fetch(tmp_path, project, split, fake, sim.workflow_id, res, lines.append)
        agg = demo._aggregate(tmp_path, project, split, export, res, lines.append)
        demo._retire(tmp_path, fake, sim.workflow_id, tmp_path / "aggregated" / "subjects.parquet",
                     len(split["labelled"]), res, lines.append)
        yield Round1(cfg, sim, res, lines, split, project, fake, export, agg, fake.state.retired(sim.workflow_id))


def test_demo_fetches_retires_and_replays(panoptes_client, tmp_path):
    cfg = demo.DemoConfig(galaxies=16, seed=3, sim_image_size=100)
    with round_1(tmp_path, cfg) as r1:
        demo._replay(tmp_path, r1.export, r1.res, r1.lines.append)
    res, lines, split, project, export, agg, retired = r1.res, r1.lines, r1.split, r1.project, r1.export, r1.agg, \
        r1.retired
    subjects = tmp_path / "aggregated" / "subjects.parquet"

    # the fetched export is the labelled galaxies' classifications, every one of them
    everything = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    fetched = pd.read_csv(export, dtype=str, keep_default_na=False)
    want = everything[everything["subject_ids"].astype(int).isin(split["labelled"])]
    assert fetched["classification_id"].tolist() == want["classification_id"].tolist()
    # exactly the finished galaxies are retired on the server, with reason consensus
    table = pd.read_parquet(subjects)
    finished = {str(s) for s in table.loc[table["is_finished"].astype(bool), "subject_id"]}
    assert finished and set(retired) == finished and set(retired.values()) == {"consensus"}
    assert set(map(int, finished)) <= set(split["labelled"])
    assert res.figures["retire"]["retired_now"] == len(finished) == res.figures["retire"]["retired_on_fake_server"]
    assert len(agg.subjects) == cfg.galaxies
    # the replay's figures add up and are printed
    r = res.figures["replay"]
    assert r["galaxies"] == len(split["labelled"]) and r["classifications_available"] == len(fetched)
    assert 0 < r["classifications_saved"] == r["classifications_available"] - r["classifications_used"]
    assert r["factor"] > 1 and 3 <= r["mean_classifications_when_finished"] < 20
    assert any("volunteer classifications saved" in line for line in lines)
    per_galaxy = pd.read_csv(tmp_path / "replay.csv")
    assert per_galaxy["classifications_used"].sum() == r["classifications_used"]
    assert [line.split()[0] for line in lines if line.startswith("[")] == [f"[{i}/{demo.STEPS}]" for i in range(1, 6)]


def _upload_pool(tmp_path, project, split, fake, sim, sent_back=()) -> pd.DataFrame:
    """What select-next-batch does after choosing: cutouts (downscaled here, to fit a small byte limit) and the
    upload under the demo's round name into the demo's ledger; ``sent_back``: labelled galaxies uploaded too, as
    --include-unfinished sends them back."""
    ids = [*split["pool"], *sent_back]
    images = [project / "images" / f"{sid}.png" for sid in ids]
    limit = int(min(p.stat().st_size for p in images) * 0.4)
    sel = pd.DataFrame({"galaxy_id": [str(s) for s in ids], "image_path": [str(p) for p in images],
                        "rank": range(1, len(images) + 1)})
    sel = write_cutouts(sel, tmp_path / "cutouts", max_bytes=limit)
    assert (sel["cutout_scale"] < 0.9).all(), "the cutouts were downscaled"
    config = UploadConfig(project_id=sim.project_id, workflow_id=sim.workflow_id, subject_set_name=demo.ROUND_1,
                          endpoint=fake.url, max_bytes=limit)
    with Ledger(tmp_path / "zooniverse-state" / DEFAULT_LEDGER_NAME) as ledger:
        report = upload_selection(sel, ledger, demo.ROUND_1, config, progress=False)
        assert report.ok, report.format()
        return ledger.rows(demo.ROUND_1)


def test_demo_closes_the_loop_through_the_fake_zooniverse(panoptes_client, tmp_path):
    cfg = demo.DemoConfig(galaxies=30, seed=5, sim_image_size=100, pool_fraction=0.4, round2_volunteers=8)
    with round_1(tmp_path, cfg) as r1:
        sim, res, lines, split, project, fake = r1.sim, r1.res, r1.lines, r1.split, r1.project, r1.fake
        agg1, round_1_retired = r1.agg, r1.retired
        ledger_rows = _upload_pool(tmp_path, project, split, fake, sim)
        agg2, uploaded = demo._fetch_round_2(tmp_path, cfg, project, split, fake, sim.workflow_id, res, lines.append)
        retire_posts = len(fake.state.requests_to("POST", r"/retired_subjects$"))
        demo._retire_round_2(tmp_path, fake, sim.workflow_id, agg2, uploaded, res, lines.append)
        round_2_posts = fake.state.requests_to("POST", r"/retired_subjects$")[retire_posts:]
        retired = fake.state.retired(sim.workflow_id)
        again = fetch_exports(tmp_path / "zooniverse-export", FetchOptions(
            workflow_id=sim.workflow_id, endpoint=fake.url, incremental=True), progress=False)

    # the uploaded galaxies came back under the subject ids the upload created (the ledger's), in the
    # uploaded cutouts' frame (their metadata carries the scale), each with its first 8 simulated classifications
    new_ids = {str(i) for i in ledger_rows["subject_id"]}
    galaxy_of = dict(zip(ledger_rows["subject_id"].astype(int), ledger_rows["galaxy_id"].astype(int), strict=True))
    assert {u.subject_id: u.galaxy_id for u in uploaded} == galaxy_of and set(galaxy_of.values()) == set(split["pool"])
    merged = pd.read_csv(tmp_path / "zooniverse-export" / "classifications.csv", dtype=str, keep_default_na=False)
    came_back = merged[merged["subject_ids"].isin(new_ids)]
    simulated = pd.read_csv(project / "classifications.csv", dtype=str, keep_default_na=False)
    pool_rows = simulated[simulated["subject_ids"].astype(int).isin(split["pool"])]
    first_8 = pool_rows[pool_rows.groupby("subject_ids").cumcount() < 8]
    assert sorted(came_back["classification_id"]) == sorted(first_8["classification_id"])
    for sid, data in zip(came_back["subject_ids"], came_back["subject_data"], strict=True):
        meta = json.loads(data)[sid]
        assert int(meta["#galaxy_id"]) == galaxy_of[int(sid)] and meta["#cutout_scale"] < 0.9
    # fetch-export --incremental added exactly the new ones, duplicated nothing, and a rerun adds nothing
    r2 = res.figures["round_2"]
    n_round_1 = res.figures["fetch"]["classifications"]
    assert r2["previous_classifications"] == n_round_1 and r2["new_classifications"] == len(first_8)
    assert len(merged) == n_round_1 + len(first_8) and not merged["classification_id"].duplicated().any()
    assert r2["duplicate_classification_ids"] == 0 and again.new_classifications == 0
    # the merged export was aggregated: round 1's galaxies and the new subjects
    assert set(agg2.subjects["subject_id"]) == set(split["labelled"]) | set(galaxy_of)
    # their consensus, mapped back to the original pixels, matches the simulated truth of their galaxies
    c = r2["consensus_new"]
    assert c["n_truth"] > 10 and c["completeness"] >= 0.8 and c["purity"] >= 0.9, c
    # the finished ones (here the galaxies without clumps: 8 classifications do not finish clumpy ones) are right
    assert 0 < r2["finished_new"] == r2["finished_new_right"] < len(new_ids)
    truth = pd.read_csv(project / "truth.csv")
    clumps = agg2.clumps[agg2.clumps["accepted"] & agg2.clumps["subject_id"].isin(galaxy_of)]
    offsets = [np.hypot(*(truth.loc[truth["subject_id"] == galaxy_of[sid], ["x", "y"]].to_numpy() - xy).T).min()
               for sid, xy in zip(clumps["subject_id"], clumps[["x", "y"]].to_numpy(), strict=True)]
    assert len(offsets) > 10 and np.median(offsets) < 1.5, "the consensus lies in the original images' pixels"
    # round 2 retired exactly what round 2 finished, never re-sending round 1's
    table = pd.read_parquet(agg2.files["subjects"])
    finished = {str(s) for s in table.loc[table["is_finished"].astype(bool), "subject_id"]}
    sent = {str(i) for r in round_2_posts for i in r["body"]["subject_ids"]}
    assert sent and not sent & set(round_1_retired) and sent <= finished
    assert set(retired) == set(round_1_retired) | sent and set(retired.values()) == {"consensus"}
    assert set(retired) - set(round_1_retired) == finished - set(round_1_retired)
    f = res.figures["retire_round_2"]
    assert f["round_1_sent_again"] == 0 and f["already_retired"] == len(set(round_1_retired) & finished)
    assert f["retired_now"] == len(sent) == f["retired_new"] + f["retired_labelled"]
    assert f["retired_new"] == len(finished & new_ids) == r2["finished_new"]
    assert f["new_left_open"] == len(new_ids - finished)
    assert len(agg1.subjects) == cfg.galaxies
    assert [line.split()[0] for line in lines if line.startswith("[")][-2:] == [f"[10/{demo.STEPS}]",
                                                                               f"[11/{demo.STEPS}]"]


@pytest.mark.parametrize("first", [None, 3])
def test_closing_lines_name_the_round_2_figures(first):
    ratio = {"completeness": 0.98, "purity": 1.0, "label_accuracy": 0.9}
    figures = {"round_2": {"galaxies": 16, "classifications": 128, "per_galaxy": first,
                           "consensus_new": ratio, "consensus_new_finished": {**ratio, "purity": float("nan")},
                           "finished_new": 9, "finished_new_right": 8},
               "retire_round_2": {"retired_now": 10, "retired_new": 9, "retired_labelled": 1, "already_retired": 40},
               "replay": {"finished": 5, "galaxies": 6, "mean_classifications_when_finished": 4.0,
                          "mean_classifications_available": 20, "classifications_saved": 80,
                          "classifications_available": 120, "factor": 3.0}}
    text = "\n".join(demo.closing_lines(figures))
    assert "sent back" not in text  # no galaxy was
    sent = {**figures, "round_2": {**figures["round_2"], "sent_back": 2, "sent_back_finished": 1,
                                   "consensus_sent_back": ratio}}
    assert ("Of them, 2 were labelled galaxies the workflow retired unfinished, sent back and aggregated with their "
            "round-1 classifications as one consensus: completeness 0.980, purity 1.000, 1 finished."
            in "\n".join(demo.closing_lines(sent)))
    assert ("(3 classifications each)" if first else "(every simulated classification of each)") in text
    assert "16 uploaded galaxies" in text and "completeness 0.980" in text and "purity undefined" in text
    assert "9 finished, 8 of them with exactly the true clumps" in text
    assert "Retired in round 2: 10 (9 new galaxies, 1 labelled" in text and "the 40 retired in round 1" in text
    assert "80 of 120 volunteer classifications saved" in text


def test_a_galaxy_sent_back_gets_a_new_crowd_and_one_consensus(panoptes_client, tmp_path):
    """Round 2 with a labelled galaxy sent back (select-next-batch --include-unfinished): a new simulated crowd
    classifies its new subject (new volunteers, new classification ids), and the round-2 aggregate makes one
    consensus of its round-1 and round-2 classifications under the new subject."""
    cfg = demo.DemoConfig(galaxies=30, seed=5, sim_image_size=100, pool_fraction=0.4, round2_volunteers=8)
    with round_1(tmp_path, cfg) as r1:
        back = sorted(r1.split["labelled"])[0]
        rows = _upload_pool(tmp_path, r1.project, r1.split, r1.fake, r1.sim, sent_back=[back])
        agg2, uploaded = demo._fetch_round_2(tmp_path, cfg, r1.project, r1.split, r1.fake, r1.sim.workflow_id,
                                             r1.res, r1.lines.append)
    new_subject = int(rows.loc[rows["galaxy_id"].astype(int) == back, "subject_id"].iloc[0])
    merged = pd.read_csv(tmp_path / "zooniverse-export" / "classifications.csv", dtype=str, keep_default_na=False)
    assert not merged["classification_id"].duplicated().any()
    crowd = merged[merged["subject_ids"] == str(new_subject)]
    assert len(crowd) == 8 and crowd["user_name"].str.startswith("round-2-").all()
    s = agg2.subjects.set_index("subject_id")
    assert back not in s.index and s.loc[new_subject, "earlier_subject_ids"] == str(back)
    assert s.loc[new_subject, "n_viewers"] == 8 + s.loc[new_subject, "n_viewers_earlier_subjects"] > 8
    r2 = r1.res.figures["round_2"]
    assert r2["sent_back"] == 1 and r2["sent_back_merged"] == 1
    assert any("galaxies sent back: their round-1 subjects merged with the new ones (1 merged)" in line
               for line in r1.lines)
