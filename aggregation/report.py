"""What ``aggregate`` shows a person: a one-screen text summary and ``overview.png``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from clumptool.aggregation.pipeline import AggregationResult


def format_summary(summary: dict) -> str:
    """The end-of-run summary: what was read, what was dropped and why, what came out."""
    ex = summary["export"]
    lines = [
        f"clumptool aggregate ({summary['method']}) - {ex['path']}",
        f"  workflow {ex['workflow_id']} version {ex['workflow_version']}, drawing task {ex['task']}"
        + ("; tools (workflows export): " + ", ".join(f"{k} {t['type']} \"{t['label']}\""
                                                        for k, t in ex["tools"].items()) if ex.get("tools") else ""),
        f"  rows read {ex['rows_read']:,}; classifications used {summary['classifications_used']:,} "
        f"by {summary['volunteers']:,} volunteers on {summary['subjects']:,} subjects",
    ]
    skipped = dict(ex["rows_skipped"])
    if ex["duplicates_dropped"]:
        skipped["repeat classification of a subject by the same volunteer"] = ex["duplicates_dropped"]
    if ex.get("galaxy_repeats_dropped"):
        skipped["repeat classification of a galaxy, under another of its subjects, by the same volunteer"] = \
            ex["galaxy_repeats_dropped"]
    if ex.get("duplicate_rows_dropped"):
        skipped["duplicate rows (byte-identical copies of another row, dropped)"] = ex["duplicate_rows_dropped"]
    if ex.get("conflicting_rows_replaced"):
        skipped["rows replaced by a later, different row with the same classification_id "
                "(--on-conflicting-duplicates keep-last)"] = ex["conflicting_rows_replaced"]
    if skipped:
        lines.append("  rows not used: " + "; ".join(f"{v:,} {k}" for k, v in sorted(skipped.items())))
    if ex.get("subjects_merged_into_their_galaxy"):
        lines.append(f"  {ex['subjects_merged_into_their_galaxy']:,} earlier subjects of galaxies sent back to "
                     "Zooniverse (#galaxy_id) aggregated with the galaxy's newest subject (one consensus per galaxy; "
                     "earlier_subject_ids in the subjects table)")
    lines.append(f"  marks read {ex['marks_read']:,}; used {summary['marks_used']:,}")
    if ex["marks_dropped"]:
        dropped = []
        for k, v in sorted(ex["marks_dropped"].items()):
            if k == "not a point mark" and ex.get("non_point_marks"):
                k += " (" + ", ".join(f"{t} {n:,}" for t, n in sorted(ex["non_point_marks"].items())) + ")"
            dropped.append(f"{v:,} {k}")
        lines.append("  marks not used: " + "; ".join(dropped))
    for e in ex["examples"][:3]:
        lines.append(f"    e.g. {e['message']}")
    lines.append(
        f"  clumps: {summary['clumps_accepted']:,} accepted ({summary['odd_clumps_accepted']:,} odd) of "
        f"{summary['clumps_opened']:,} opened; {summary['subjects_with_clumps']:,} subjects with clumps"
    )
    if summary.get("subjects_without_classifications"):
        lines.append(f"  subjects in --subjects with no classification in this export: "
                     f"{summary['subjects_without_classifications']:,} (listed with n_viewers 0, not finished)")
    for note in summary.get("notes", []):
        lines.append(f"  NOTE: {note}")
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
    seen = result.subjects[result.subjects["n_viewers"] > 0] if "n_viewers" in result.subjects else result.subjects
    risky = seen.sort_values("risk", ascending=False)["subject_id"].tolist()
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
            with Image.open(p) as im:
                return np.asarray(im.convert("RGB"))
    return None


def overview_figure(result: AggregationResult, target: str | os.PathLike, images: str | os.PathLike | None = None,
                    n_galaxies: int = 6) -> Path:
    """A few galaxies with volunteer marks and consensus clumps, and the volunteer-skill distributions.

    Built on a bare Agg ``Figure`` with a fixed grid (no pyplot, no layout engine), the galaxy panels without
    axes (a dark square or the image under the marks): a fraction of a second, which matters when the whole
    aggregation of 100k classifications takes three.
    """
    from clumptool.common.figures import new_figure, save_png

    picks = _pick_subjects(result, n_galaxies)
    ncols = 3
    nrows = int(np.ceil(len(picks) / ncols)) + 1
    fig = new_figure(figsize=(4.2 * ncols, 4.2 * nrows))  # 4.2 in per panel
    axes = fig.subplots(nrows, ncols, squeeze=False)
    height = 4.2 * nrows
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.55 / height, top=1 - 0.95 / height, wspace=0.22,
                        hspace=0.2)
    marks, clumps, subj = result.marks, result.clumps, result.subjects.set_index("subject_id")
    marks = marks[marks["subject_id"].isin(picks)]
    clumps = clumps[clumps["subject_id"].isin(picks)]
    for ax, sid in zip(axes[:-1].ravel(), picks, strict=False):
        w = float(subj.loc[sid, "image_width"]) if "image_width" in subj else np.nan
        h = float(subj.loc[sid, "image_height"]) if "image_height" in subj else np.nan
        w, h = (w if np.isfinite(w) and w > 0 else 400.0), (h if np.isfinite(h) and h > 0 else 400.0)
        img = _load_image(images, sid)
        if img is None:  # a dark square (the panels carry no axes: their tick machinery cost most of the figure)
            img = np.full((1, 1, 3), 0.12)
        ax.imshow(img, origin="upper", extent=(0, w, h, 0) if img.shape[:2] == (1, 1) else
                  (0, img.shape[1], img.shape[0], 0), interpolation="nearest")
        m = marks[marks["subject_id"] == sid]
        linked = (m["clump_id"] >= 0).to_numpy()
        ax.scatter(m["x"][linked], m["y"][linked], s=6, c=np.where(m["tool"][linked] == 1, "orange", "cyan"),
                   alpha=0.7, linewidths=0)
        ax.scatter(m["x"][~linked], m["y"][~linked], s=14, marker="x", c="red", alpha=0.8, linewidths=0.8)
        c = clumps[clumps["subject_id"] == sid]
        colours = np.where(c["label"] == 2, "orange", "lime")
        for accepted, style in ((True, "-"), (False, "--")):
            sel = (c["accepted"] == accepted).to_numpy()
            if sel.any():
                ax.scatter(c["x"][sel], c["y"][sel], s=110, facecolors="none", edgecolors=colours[sel],
                           linewidths=1.4, linestyles=style)
        for x, y, p, colour in zip(c["x"], c["y"], c["false_pos_prob"], colours, strict=True):
            ax.text(x + 8, y - 8, f"{1 - p:.2f}", color=colour, fontsize=7)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_aspect("equal")
        risk = subj.loc[sid, "risk"] if "risk" in subj else np.nan
        ax.set_title(f"subject {sid}: {int((c['accepted']).sum())} clumps, risk {risk:.2f}", fontsize=9)
        ax.set_axis_off()
    for ax in axes[:-1].ravel()[len(picks):]:
        ax.axis("off")
    vols = result.volunteers
    skill_axes = axes[-1]
    for ax, col, label in zip(skill_axes, ("p_fp", "p_fn", "scatter_px"),
                              ("false-positive rate p_fp", "false-negative rate p_fn", "click scatter (px)"),
                              strict=True):
        if col in vols and vols[col].notna().any():
            counts, edges = np.histogram(vols[col].dropna(), bins=30)
            ax.stairs(counts, edges, fill=True, color="steelblue")
            ax.set_xlabel(label)
            ax.set_ylabel("volunteers")
        else:
            ax.text(0.5, 0.5, f"{label}:\nnot estimated by this method", ha="center", va="center")
            ax.axis("off")
    fig.suptitle("Consensus clumps (circles: green clump, orange odd; dashed = rejected; number = 1 - false_pos_prob)\n"
                 "marks: cyan normal tool, orange odd tool, red x = false positive", fontsize=10)
    return save_png(fig, target, dpi=72)
