"""``clumptool demo``: the whole pipeline on a built-in simulated project, as one plain function.

simulate -> aggregate (consensus labels from simulated volunteers) -> consensus checked against the truth.
Each stage writes into its own folder under ``out``; the function returns those paths and the figures a
person would look at first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clumptool.aggregation.evaluation import match_to_truth
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.common.atomic import write_text_atomic
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.project import simulate_project


@dataclass
class DemoResult:
    out_dir: Path
    figures: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def run_demo(out_dir: str | os.PathLike, galaxies: int = 300, seed: int = 7,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage on a fresh simulated project in ``out_dir`` and report what it measured."""
    out = Path(out_dir)
    res = DemoResult(out_dir=out)

    t = time.perf_counter()
    log(f"[1] simulate: {galaxies} galaxies, 20 volunteers each -> {out / 'project'}")
    sim = simulate_project(out / "project", SimulationConfig(galaxies=galaxies, seed=seed))
    res.seconds["simulate"] = time.perf_counter() - t
    res.paths["project"] = str(sim.out_dir)
    res.paths["preview"] = str(sim.out_dir / "preview.png")
    log(f"    {sim.n_clumps} clumps injected, {sim.n_classifications} classifications "
        f"({res.seconds['simulate']:.1f} s)")

    t = time.perf_counter()
    log(f"[2] aggregate: volunteer clicks -> consensus clumps -> {out / 'aggregated'}")
    project = sim.out_dir
    agg = aggregate(project / "classifications.csv", project / "subjects.csv", out / "aggregated",
                    AggregateOptions(), images=project / "images")
    res.seconds["aggregate"] = time.perf_counter() - t
    truth = pd.read_csv(project / "truth.csv")
    score = match_to_truth(agg.clumps[agg.clumps["accepted"]], truth, radius=5.0)
    res.figures["consensus"] = score.as_dict()
    res.paths.update({k: v for k, v in agg.files.items()})
    log(f"    {len(agg.boxes)} training boxes; consensus vs truth: completeness {score.completeness:.3f}, "
        f"purity {score.purity:.3f}, labels right {score.label_accuracy:.3f} ({res.seconds['aggregate']:.1f} s)")

    write_text_atomic(out / "demo-summary.json", json.dumps(
        {"figures": res.figures, "paths": res.paths, "seconds": res.seconds}, indent=2, default=str))
    log("")
    log("Where everything is:")
    log(f"  simulated project, images, truth   {res.paths['project']}")
    log(f"  what the galaxies look like        {res.paths['preview']}")
    log(f"  consensus clumps, boxes, skills    {out / 'aggregated'}")
    log(f"  marks and clumps drawn             {res.paths.get('overview')}")
    log(f"  this summary                       {out / 'demo-summary.json'}")
    return res
