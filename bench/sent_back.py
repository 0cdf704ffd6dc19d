"""A galaxy sent back to Zooniverse: one consensus of both subjects, or each subject on its own?

``select-next-batch --include-unfinished`` uploads a galaxy the workflow retired unfinished as a new subject.
``aggregate`` merges the classifications of a galaxy's subjects under the newest (aggregation/galaxies.py);
``--per-subject`` keeps them apart, and ``train`` then keeps the subject with more classifications. This bench
measures what the merge is worth on every simulated crowd that reaches the limit (not sparse): each galaxy gets ``--first`` classifications (the
retirement limit) under its own subject; the galaxies the stopping rule leaves unfinished at that point are sent
back and get ``--more`` classifications under a new, half-size subject (``simulation/uploaded.py``: marks on the
downscaled cutout, mapped back by the reader). Scored against truth on the sent-back galaxies: the merged
consensus, the first subject alone (what training kept before merging), the new subject alone, and the consensus
of the same classifications as one subject (the ceiling: nothing is lost in the merge if merged equals it).

Run: ``python bench/sent_back.py [--galaxies 300] [--first 20] [--more 10] [--seed 1] [--crowds default,...]
[--work DIR]`` (~10 s per crowd of 1000 galaxies on 2 cores; sparse is skipped: its 6-10 volunteers never reach 20).

Measured (Dec 3 2026, ``--galaxies 1000 --seed S``; consensus F1 on the sent-back galaxies, seed 1 / seed 2):
the merged consensus equals the ceiling on every crowd measured and both seeds (the reader's mapping of the cutout's marks
loses nothing that changes a clump). Against the first subject alone (what ``train`` kept before the merge):
default 0.973 -> 0.991 / 0.973 -> 0.995, bulge 0.968 -> 0.994 / 0.987 -> 0.994, distractor 0.998 -> 1.000 /
0.995 -> 0.998, tool confusion 0.986 -> 0.999 / 0.996 -> 1.000 (labels 0.879 -> 0.944 / 0.890 -> 0.946).
Against the new subject alone: better on 7 of 8, 0.003 lower on the default crowd at seed 1 (0.994 against 0.991,
61 galaxies). 40-71% of the sent-back galaxies finish with the merged 30 (the first subject alone: 0-4%).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from lean import consensus_scores

from clumptool.aggregation.export import ReadOptions
from clumptool.aggregation.pipeline import AggregateOptions, aggregate
from clumptool.aggregation.replay import queue_rank
from clumptool.simulation.config import CROWDS, CrowdConfig, SimulationConfig
from clumptool.simulation.project import simulate_project
from clumptool.simulation.uploaded import UploadedSubject, classifications_of_uploaded

NEW_IDS = 990_000_000  # the new subjects' ids: above every simulated one (Zooniverse ids grow)


def _scores(res, truth: pd.DataFrame, subject_of: dict[int, int], radius: float) -> dict:
    """Consensus of the subjects ``subject_of`` names (subject -> galaxy) against their galaxies' truth."""
    clumps = res.clumps[res.clumps["subject_id"].isin(subject_of)]
    clumps = clumps.assign(subject_id=clumps["subject_id"].map(subject_of))
    c, p, f1, labels = consensus_scores(SimpleNamespace(clumps=clumps), truth[truth["subject_id"].isin(subject_of.values())], radius)
    subj = res.subjects[res.subjects["subject_id"].isin(subject_of)]
    return {"compl": c, "purity": p, "F1": f1, "labels": labels, "finished": subj["is_finished"].mean(),
            "viewers": subj["n_viewers"].mean()}


def run_crowd(crowd: str, args: argparse.Namespace, work: Path) -> list[dict]:
    root = work / f"{crowd}-{args.galaxies}-{args.first + args.more}"  # a cache per project
    cfg = SimulationConfig(galaxies=args.galaxies, volunteers_per_subject=args.first + args.more, seed=args.seed,
                           images=False, crowd=CrowdConfig.preset(crowd))
    if crowd == "sparse":  # draws its own 6-10 volunteers: no galaxy reaches a retirement limit of 20
        return []
    if not (root / "classifications.csv").exists():
        simulate_project(root, cfg)
    export = pd.read_csv(root / "classifications.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(root / "truth.csv")
    rank = queue_rank(export)
    first = export[rank < args.first]
    first.to_csv(root / "first.csv", index=False)
    at_limit = aggregate(root / "first.csv", options=AggregateOptions(retirement_limit=args.first))
    unfinished = at_limit.subjects.loc[~at_limit.subjects["is_finished"], "subject_id"].astype(int).tolist()
    uploaded = [UploadedSubject(subject_id=NEW_IDS + i, galaxy_id=g, width=cfg.image_size // 2,
                                height=cfg.image_size // 2, metadata={"#galaxy_id": str(g), "#cutout_scale": 0.5})
                for i, g in enumerate(unfinished)]
    later = export[(rank >= args.first) & (rank < args.first + args.more)]
    later = later[later["subject_ids"].astype(int).isin(unfinished)]
    split = pd.concat([first, classifications_of_uploaded(later, uploaded)], ignore_index=True)
    split.to_csv(root / "split.csv", index=False)
    pd.concat([first, later], ignore_index=True).to_csv(root / "whole.csv", index=False)  # the same, one subject
    opts = AggregateOptions(retirement_limit=args.first)
    merged = aggregate(root / "split.csv", options=opts)
    apart = aggregate(root / "split.csv", options=AggregateOptions(retirement_limit=args.first,
                                                                   read=ReadOptions(merge_galaxies=False)))
    whole = aggregate(root / "whole.csv", options=opts)
    new = {u.subject_id: u.galaxy_id for u in uploaded}
    old = {g: g for g in unfinished}
    lines = [("merged (one consensus, newest subject)", merged, new), ("first subject alone (kept by train before)",
                                                                      apart, old),
             ("new subject alone", apart, new), ("both as one subject (ceiling)", whole, old)]
    return [{"crowd": crowd, "sent back": len(unfinished), "consensus": name,
             **_scores(res, truth, ids, args.radius)} for name, res, ids in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=300)
    ap.add_argument("--first", type=int, default=20, help="classifications before the galaxy is retired")
    ap.add_argument("--more", type=int, default=10, help="classifications of the new subject")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crowds", default=",".join(c for c in CROWDS if c != "sparse"))
    ap.add_argument("--radius", type=float, default=5.0)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sent-back-"))
    rows = [r for crowd in args.crowds.split(",") for r in run_crowd(crowd, args, work / f"seed{args.seed}")]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(f"galaxies {args.galaxies}, {args.first} classifications then {args.more} more under a new subject "
              f"for the unfinished ones, seed {args.seed}; scored on the galaxies sent back")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
