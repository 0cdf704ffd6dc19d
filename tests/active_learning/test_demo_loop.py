"""The demo's Zooniverse steps (demo.py 1-5) on a tiny simulated project: fetch-export from the fake server,
aggregate, retire, replay. The training steps are covered by the detection tests and ``make demo``."""

from __future__ import annotations

import pandas as pd

from clumptool import demo
from clumptool.simulation.config import SimulationConfig
from clumptool.testing.fake_panoptes import FakePanoptes


def test_demo_fetches_retires_and_replays(panoptes_client, tmp_path):
    cfg = demo.DemoConfig(galaxies=16, seed=3, sim_image_size=100)
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
        subjects = tmp_path / "aggregated" / "subjects.parquet"
        demo._retire(tmp_path, fake, sim.workflow_id, subjects, len(split["labelled"]), res, lines.append)
        retired = fake.state.retired(sim.workflow_id)
        demo._replay(tmp_path, export, res, lines.append)

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
