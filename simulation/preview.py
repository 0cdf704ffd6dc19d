"""``preview.png``: a grid of simulated images, with the true clumps circled on the lower row."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Circle
from PIL import Image

from clumptool.common.figures import new_figure, save_png


def preview_grid(images: Path, truth: pd.DataFrame, target: str | os.PathLike, n: int = 8) -> Path:
    """Show ``n`` galaxies (the clumpiest first) twice: as a volunteer sees them, and with the truth circled."""
    files = sorted(Path(images).glob("*.png"))
    counts = truth.groupby("subject_id").size() if len(truth) else pd.Series(dtype=int)
    files.sort(key=lambda p: (-int(counts.get(int(p.stem), 0)), p.stem))
    picks = files[:n]
    cols = max(1, min(4, len(picks)))
    rows = int(np.ceil(len(picks) / cols))
    fig = new_figure(figsize=(3.2 * cols, 3.3 * 2 * rows))
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for k, path in enumerate(picks):
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        r, c = divmod(k, cols)
        for ax, circled in ((axes[2 * r, c], False), (axes[2 * r + 1, c], True)):
            ax.imshow(img, origin="upper")
            ax.set_xticks([])
            ax.set_yticks([])
            if circled:
                t = truth[truth["subject_id"] == int(path.stem)]
                for _, row in t.iterrows():
                    colour = "orange" if row["label"] == 2 else "cyan"
                    ax.add_patch(Circle((row["x"], row["y"]), 1.6 * row["fwhm_px"], fill=False, ec=colour,
                                            lw=1.0, ls="-" if row["detectable"] else ":"))
                ax.set_title(f"{path.stem}: truth", fontsize=8)
            else:
                ax.set_title(f"{path.stem}", fontsize=8)
    for ax in axes.ravel()[2 * len(picks):]:
        ax.axis("off")
    fig.suptitle("Simulated Clump Scout subjects (circles: cyan clump, orange odd; dotted = below detection S/N)",
                 fontsize=9)
    fig.tight_layout()
    return save_png(fig, target, dpi=70)
