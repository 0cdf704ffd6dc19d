"""What ``aggregate`` shows a person: a one-screen text summary and ``overview.png``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clumptool.common.atomic import atomic_path

if TYPE_CHECKING:
    from clumptool.aggregation.pipeline import AggregationResult


def format_summary(summary: dict) -> str:
    """The end-of-run summary: what was read, what was dropped and why, what came out."""
    ex = summary["export"]
    lines = [
        f"clumptool aggregate ({summary['method']}) - {ex['path']}",
        f"  workflow {ex['workflow_id']} version {ex['workflow_version']}, drawing task {ex['task']}",
        f"  rows read {ex['rows_read']:,}; classifications used {summary['classifications_used']:,} "
        f"by {summary['volunteers']:,} volunteers on {summary['subjects']:,} subjects",
    ]
    skipped = dict(ex["rows_skipped"])
    if ex["duplicates_dropped"]:
        skipped["repeat classification of a subject by the same volunteer"] = ex["duplicates_dropped"]
    if skipped:
        lines.append("  rows not used: " + "; ".join(f"{v:,} {k}" for k, v in sorted(skipped.items())))
    lines.append(f"  marks read {ex['marks_read']:,}; used {summary['marks_used']:,}")
    if ex["marks_dropped"]:
        lines.append("  marks not used: " + "; ".join(f"{v:,} {k}" for k, v in sorted(ex["marks_dropped"].items())))
    for e in ex["examples"][:3]:
        lines.append(f"    e.g. {e['message']}")
    lines.append(
        f"  clumps: {summary['clumps_accepted']:,} accepted ({summary['odd_clumps_accepted']:,} odd) of "
        f"{summary['clumps_opened']:,} opened; {summary['subjects_with_clumps']:,} subjects with clumps"
    )
    if summary.get("subjects_finished") is not None:
        lines.append(f"  finished subjects (low risk): {summary['subjects_finished']:,} of {summary['subjects']:,}")
    if summary.get("fit"):
        f = summary["fit"]
        lines.append(f"  model: {f['iterations']} EM iterations, best at {f['best_iteration']}")
    s = summary["seconds"]
    n = max(summary["export"]["rows_read"], 1)
    total = s["read"] + s["model"]
    lines.append(f"  time: read {s['read']:.1f} s, model {s['model']:.1f} s ({n / max(total, 1e-9):,.0f} classifications/s)")
    if summary.get("files"):
        lines.append(f"  outputs in {Path(summary['files']['summary']).parent}")
    return "\n".join(lines)


def _pick_subjects(result: AggregationResult, n: int) -> list[int]:
    subj = result.subjects.sort_values(["n_clumps", "subject_id"], ascending=[False, True])
    with_clumps = subj[subj["n_clumps"] > 0]["subject_id"].tolist()
    picks = with_clumps[: n - 1] if len(with_clumps) >= n - 1 else with_clumps
    risky = result.subjects.sort_values("risk", ascending=False)["subject_id"].tolist()
    for sid in risky:
        if len(picks) >= n:
            break
        if sid not in picks:
            picks.append(sid)
    return picks[:n]


def _load_image(images: str | os.PathLike | None, subject_id: int):
    if images is None:
        return None
    for ext in (".png", ".jpg", ".jpeg"):
        p = Path(images) / f"{subject_id}{ext}"
        if p.exists():
            from PIL import Image

            with Image.open(p) as im:
                return np.asarray(im.convert("RGB"))
    return None


def overview_figure(result: AggregationResult, target: str | os.PathLike, images: str | os.PathLike | None = None,
                    n_galaxies: int = 6) -> Path:
    """A few galaxies with volunteer marks and consensus clumps, and the volunteer-skill distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = _pick_subjects(result, n_galaxies)
    ncols = 3
    nrows = int(np.ceil(len(picks) / ncols)) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.2 * nrows), squeeze=False)
    marks, clumps, subj = result.marks, result.clumps, result.subjects.set_index("subject_id")
    for ax, sid in zip(axes[:-1].ravel(), picks, strict=False):
        w = float(subj.loc[sid, "image_width"]) if "image_width" in subj else 400.0
        h = float(subj.loc[sid, "image_height"]) if "image_height" in subj else 400.0
        img = _load_image(images, sid)
        if img is not None:
            ax.imshow(img, origin="upper", extent=(0, img.shape[1], img.shape[0], 0))
        else:
            ax.set_facecolor("0.12")
        m = marks[marks["subject_id"] == sid]
        linked = m["clump_id"] >= 0
        ax.scatter(m.loc[linked, "x"], m.loc[linked, "y"], s=6, c=np.where(m.loc[linked, "tool"] == 1, "orange", "cyan"),
                   alpha=0.7, linewidths=0, label="marks")
        ax.scatter(m.loc[~linked, "x"], m.loc[~linked, "y"], s=14, marker="x", c="red", alpha=0.8,
                   linewidths=0.8, label="false-positive marks")
        c = clumps[clumps["subject_id"] == sid]
        for _, r in c.iterrows():
            colour = "orange" if r["label"] == 2 else "lime"
            ax.add_patch(plt.Circle((r["x"], r["y"]), 7, fill=False, lw=1.4, ec=colour,
                                    ls="-" if r["accepted"] else "--"))
            ax.text(r["x"] + 8, r["y"] - 8, f"{1 - r['false_pos_prob']:.2f}", color=colour, fontsize=7)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        risk = subj.loc[sid, "risk"] if "risk" in subj else np.nan
        ax.set_title(f"subject {sid}: {int((c['accepted']).sum())} clumps, risk {risk:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:-1].ravel()[len(picks):]:
        ax.axis("off")
    vols = result.volunteers
    skill_axes = axes[-1]
    for ax, col, label in zip(skill_axes, ("p_fp", "p_fn", "scatter_px"),
                              ("false-positive rate p_fp", "false-negative rate p_fn", "click scatter (px)"),
                              strict=True):
        if col in vols and vols[col].notna().any():
            ax.hist(vols[col].dropna(), bins=30, color="steelblue")
            ax.set_xlabel(label)
            ax.set_ylabel("volunteers")
        else:
            ax.text(0.5, 0.5, f"{label}:\nnot estimated by this method", ha="center", va="center")
            ax.axis("off")
    fig.suptitle("Consensus clumps (circles: green clump, orange odd; dashed = rejected; number = 1 - false_pos_prob)\n"
                 "marks: cyan normal tool, orange odd tool, red x = false positive", fontsize=10)
    fig.tight_layout()
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(target)
