"""Figures of the detection layer: training curves, completeness/purity curves, detections on galaxies.

Drawn on a bare matplotlib ``Figure`` with an Agg canvas, never through pyplot: a notebook user's backend
and open figures stay as they were.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rcParams
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from clumptool.common.figures import new_figure, save_png
from clumptool.detection.metrics import ScoreCurve

CLASS_COLOURS = {1: "#00e5ff", 2: "#ff4fd8"}
TRUTH_COLOUR = "#ffd400"
MAX_SCORE_LABELS = 12  # beyond this many boxes per galaxy, scores would hide the image


def plot_history(history: pd.DataFrame, target: Path) -> Path | None:
    """training.png: training losses (left) and validation completeness/purity/F1 (right) per epoch."""
    if history.empty:
        return None
    fig = new_figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    for col in [c for c in history.columns if c.startswith("train_")]:
        s = history[["epoch", col]].dropna()
        label = col[len("train_"):].removesuffix("_epoch")
        a.plot(s["epoch"], s[col], marker="o", ms=3, label="total" if label == "loss" else label)
    a.set(xlabel="epoch", ylabel="loss", title="training losses", yscale="log")
    a.legend(fontsize=8)
    for col in ("val_f1", "val_completeness", "val_purity"):
        if col in history:
            s = history[["epoch", col]].dropna()
            b.plot(s["epoch"], s[col], marker="o", ms=3, label=col[4:])
    b.set(xlabel="epoch", ylim=(0, 1.02), title="validation (score >= 0.5, centre match)")
    if b.get_legend_handles_labels()[0]:
        b.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, target, dpi=110)


def plot_score_curves(curves: Mapping[str, ScoreCurve], target: str | os.PathLike, title: str = "",
                      operating: float | None = None) -> None:
    """Left: completeness and purity vs score threshold; right: purity vs completeness. The operating
    threshold (solid grey line) and the best F1 on this set (dotted, optimistic) are marked."""
    fig = new_figure(figsize=(11, 4.6))
    ax1, ax2 = fig.subplots(1, 2)
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, curve) in enumerate(curves.items()):
        if len(curve.thresholds) == 0:
            continue
        c = colours[k % len(colours)]
        lw = 2.2 if name == "overall" else 1.2
        t, comp, pur = curve.thresholds, curve.completeness, curve.purity
        ax1.plot(t, comp, color=c, lw=lw, label=f"{name} completeness")
        ax1.plot(t, pur, color=c, lw=lw, ls="--", label=f"{name} purity")
        ax2.plot(comp, pur, color=c, lw=lw, label=f"{name} (n_true={curve.n_true})")
        best = curve.best_f1()
        if best["threshold"] is not None:
            ax2.plot(best["completeness"], best["purity"], "o", color=c)
            if name == "overall":
                ax2.annotate(f"best F1 on this set = {best['f1']:.2f} at score {best['threshold']:.2f} (optimistic)",
                             (best["completeness"], best["purity"]), textcoords="offset points", xytext=(6, -12),
                             fontsize=8, color=c)
                ax1.axvline(best["threshold"], color=c, lw=0.8, ls=":")
    if operating is not None:
        ax1.axvline(operating, color="0.4", lw=1.0, label=f"operating threshold {operating:.2f}")
    ax1.set(xlabel="score threshold", ylabel="completeness / purity", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set(xlabel="completeness", ylabel="purity", xlim=(0, 1.02), ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a model with no detection at all draws no curve
            ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else None)
    save_png(fig, target, dpi=110)


@dataclass
class Panel:
    """One galaxy to draw: its image (C, H, W in [0, 1]) and boxes in its pixels."""

    title: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    true_boxes: np.ndarray | None = None
    region: tuple[float, float, float, float] | None = None  # the part the model sees (x1, y1, x2, y2)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    img = np.asarray(image, dtype=float)
    if img.ndim == 2:
        img = img[None]
    if img.shape[0] == 3:
        return np.clip(img.transpose(1, 2, 0), 0, 1), None
    band = img[0]
    lo, hi = np.nanpercentile(band, [1, 99.5])
    return np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1), "gray"


def plot_detections(panels: Sequence[Panel], target: str | os.PathLike, title: str = "", ncols: int = 4) -> None:
    """A grid of galaxies with detected boxes (colour by class, score printed) and optional true boxes."""
    n = max(len(panels), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = new_figure(figsize=(3.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, p in zip(axes.ravel(), panels, strict=False):
        img, cmap = _display(p.image)
        ax.imshow(img, cmap=cmap, origin="upper", interpolation="nearest")
        if p.region is not None:
            x1, y1, x2, y2 = p.region
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=0.6, ls=":"))
        if p.true_boxes is not None:
            for b in np.asarray(p.true_boxes).reshape(-1, 4):
                ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=TRUTH_COLOUR, lw=1.0,
                                       ls="--"))
        label_scores = len(p.boxes) <= MAX_SCORE_LABELS
        for b, lab, s in zip(np.asarray(p.boxes).reshape(-1, 4), p.labels, p.scores, strict=True):
            c = CLASS_COLOURS.get(int(lab), "red")
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=c, lw=1.0))
            if label_scores:
                ax.text(b[0], b[1] - 1, f"{s:.2f}", color=c, fontsize=6, va="bottom")
        ax.set_title(f"{p.title}: {len(p.boxes)} detections", fontsize=8)
    handles = [Line2D([], [], color=c, lw=1.5, label=name) for name, c in
               (("clump", CLASS_COLOURS[1]), ("odd clump", CLASS_COLOURS[2]))]
    if any(p.true_boxes is not None for p in panels):
        handles.append(Line2D([], [], color=TRUTH_COLOUR, lw=1.0, ls="--", label="truth"))
    if any(p.region is not None for p in panels):
        handles.append(Line2D([], [], color="grey", lw=0.8, ls=":", label="region the model sees"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    save_png(fig, target, dpi=100)
