"""Simulator benchmark: speed, reproducibility, and that the export parses with panoptes_aggregation.

    .venv/bin/python bench/simulation.py                               # 2,000 galaxies at 400x400, 20 volunteers
    .venv/bin/python bench/simulation.py --check-panoptes-aggregation  # also parse with panoptes_aggregation

Every figure printed is measured by this script on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd

from clumptool.aggregation.export import read_export
from clumptool.simulation.config import SimulationConfig
from clumptool.simulation.project import simulate_project


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def check_panoptes(project: Path, work: Path) -> None:
    venv = work / "pa-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "panoptes-aggregation"], check=True)
    cfg = work / "Extractor_config.yaml"
    cfg.write_text(textwrap.dedent("""\
        extractor_config:
            shape_extractor:
            -   shape: point
                task: T1
                tools: [0, 1]
        workflow_id: 99999
        workflow_version: '12.34'
        """))
    t = time.perf_counter()
    subprocess.run([str(venv / "bin" / "panoptes_aggregation"), "extract", str(project / "classifications.csv"),
                    str(cfg), "-d", str(work), "-o", "sim"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    out = next(work.glob("shape_extractor_*sim*.csv"))
    ext = pd.read_csv(out)
    n = len(pd.read_csv(project / "classifications.csv"))
    with_points = ext.filter(like="_x").notna().any(axis=1).sum()
    print(f"  panoptes_aggregation extract (shape_extractor, point): {len(ext):,} of {n:,} rows extracted, "
          f"{with_points:,} with points, {time.perf_counter() - t:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--galaxies", type=int, default=2000)
    ap.add_argument("--big", type=int, default=20000, help="galaxies of the image-free export timing")
    ap.add_argument("--check-panoptes-aggregation", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clumptool-bench-sim-"))
    try:
        cfg = SimulationConfig(galaxies=args.galaxies, seed=11)
        t = time.perf_counter()
        r = simulate_project(work / "a", cfg)
        sec = time.perf_counter() - t
        print(f"== {args.galaxies:,} galaxies at {cfg.image_size}x{cfg.image_size}, {cfg.volunteers_per_subject} "
              f"volunteers each, {os.cpu_count()} CPUs")
        print(f"  wall {sec:.1f} s ({args.galaxies / sec:.1f} galaxies/s; goal < 120 s); {r.n_clumps:,} clumps, "
              f"{r.n_classifications:,} classifications")
        small = SimulationConfig(galaxies=50, seed=11)
        simulate_project(work / "b1", small)
        simulate_project(work / "b2", small)
        same = digest(work / "b1") == digest(work / "b2")
        print(f"  same seed, same bytes (50 galaxies, every file): {same}")
        data = read_export(work / "a" / "classifications.csv")
        rep = data.report
        print(f"  aggregation reader: {rep.rows_read:,} rows, skipped {dict(rep.rows_skipped) or 'none'}, "
              f"repeats dropped {rep.duplicates_dropped}")
        t = time.perf_counter()
        big = simulate_project(work / "big", SimulationConfig(galaxies=args.big, seed=12, images=False))
        sec = time.perf_counter() - t
        print(f"== image-free export: {big.n_classifications:,} classifications in {sec:.1f} s "
              f"({big.n_classifications / sec:,.0f} classifications/s)")
        if args.check_panoptes_aggregation:
            check_panoptes(work / "a", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
