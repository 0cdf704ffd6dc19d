"""``selection.png``: the chosen galaxies with the model's boxes, and where the batch sits in the pool's scores.

The boxes are the detections the scoring already computed (the detector is not run again to draw). Drawn on a
bare matplotlib ``Figure`` with an Agg canvas, never through pyplot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from clumptool.common.figures import new_figure, save_png
from clumptool.detection.inference import Detections

MAX_SHOWN = 16


def selection_figure(selection: pd.DataFrame, pool_scores: pd.DataFrame | None,
                     detections: Mapping[str, Detections] | None, target: Path) -> Path:
    """Grid of up to 16 selected galaxies (model boxes: solid >= 0.5, dashed 0.2-0.5, title = rank/score;
    random controls in orange) over a histogram of the pool's and the batch's scores.

    ``detections``: each galaxy's detections by galaxy id, in original pixels (a galaxy without an entry, or
    ``None`` for all, is drawn without boxes)."""
    sel = selection.sort_values("rank")
    al = sel[~sel["control"].astype(bool)]
    ctrl = sel[sel["control"].astype(bool)]
    n_ctrl = min(len(ctrl), 4) if len(al) else min(len(ctrl), MAX_SHOWN)
    shown = pd.concat([al.head(MAX_SHOWN - n_ctrl), ctrl.head(n_ctrl)])
    detections = detections or {}
    ncol = 4
    nrow = max(1, int(np.ceil(len(shown) / ncol)))
    fig = new_figure(figsize=(ncol * 2.6, nrow * 2.7 + 3.0))
    gs = fig.add_gridspec(nrow + 1, ncol, height_ratios=[2.7] * nrow + [3.0])
    for i, (_, row) in enumerate(shown.iterrows()):
        ax = fig.add_subplot(gs[i // ncol, i % ncol])
        path = str(row["image_path"])
        try:
            with Image.open(path) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
        except Exception:  # noqa: BLE001 - FITS or unreadable: leave the panel blank, keep the figure
            ax.text(0.5, 0.5, "no preview", ha="center", va="center", transform=ax.transAxes)
        det = detections.get(str(row["galaxy_id"]))
        b, s = (det.boxes, det.scores) if det is not None else (np.zeros((0, 4)), np.zeros(0))
        for (x1, y1, x2, y2), sc in zip(b, s, strict=True):
            if sc < 0.2:
                continue
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.0,
                                   ec="cyan" if sc >= 0.5 else "yellow", ls="-" if sc >= 0.5 else "--"))
        colour = "tab:orange" if bool(row["control"]) else "black"
        kind = "control" if bool(row["control"]) else str(row["strategy"])
        ax.set_title(f"#{int(row['rank'])} {row['galaxy_id']}\n{kind} {float(row['score']):.3g}", fontsize=7,
                     color=colour)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[nrow, :])
    pool = pool_scores["score"].to_numpy(dtype=float) if pool_scores is not None and len(pool_scores) else None
    batch = al["score"].to_numpy(dtype=float)
    allv = np.concatenate([v for v in (pool, batch) if v is not None and len(v)]) if len(batch) or pool is not None \
        else np.zeros(1)
    bins = np.linspace(float(np.nanmin(allv)), float(np.nanmax(allv)) + 1e-9, 40)
    if pool is not None:
        ax.hist(pool, bins=bins, color="0.6", label=f"pool ({len(pool):,})")
    if len(batch):
        ax.hist(batch, bins=bins, color="tab:blue", alpha=0.8, label=f"batch ({len(batch):,})")
    if len(ctrl):
        ax.hist(ctrl["score"].to_numpy(dtype=float), bins=bins, histtype="step", color="tab:orange", lw=1.5,
                label=f"random controls ({len(ctrl):,})")
    ax.set_yscale("log")
    ax.set(xlabel="acquisition score", ylabel="galaxies")
    ax.legend(fontsize=8)
    fig.suptitle(f"round {sel['round'].iloc[0] if 'round' in sel else ''}: {len(al)} selected + {len(ctrl)} controls "
                 "(boxes: cyan >= 0.5, yellow 0.2-0.5)", fontsize=9)
    fig.tight_layout()
    save_png(fig, target, dpi=100)
    return target
