"""Detection benchmark: (a) quality on simulated truth, (b) CPU speed and the training-loop overhead.

    .venv/bin/python bench/detection.py --quick            # a few minutes: proves every step works
    .venv/bin/python bench/detection.py --minutes 30       # the real run: 30 min of training per model

(a) Quality. ``clumptool.simulation.simulate_project`` makes a project (default 800 galaxies at 400 px);
``clumptool.aggregation.pipeline.aggregate`` turns the SIMULATED VOLUNTEERS' clicks into consensus boxes (the
labels the detector trains on; the truth is never used for training). 20 % of the galaxies are held out
(split by galaxy, seeded); the rest are split 80/20 into train/validation. Each backbone is trained from
RANDOM initialisation (nothing can be downloaded here; with Zoobot weights the real run would start from
``--weights zoobot``) for ``--minutes``, then evaluated against ``truth.csv`` on the held-out galaxies with
:func:`clumptool.detection.evaluate.evaluate_model` (D2's metrics: centre matching within one PSF FWHM,
one-to-one; completeness, purity and F1 at the best-F1 threshold; COCO mAP@0.5). Goal: completeness and
purity >= 0.85 within ~30 min of 2-core CPU training.

(b) Speed, on CPU at the working size: training images/s through ``train`` (Lightning, DataLoader,
augmentation; images cached in memory as ``--cache`` does, decoding time reported separately) and inference
images/s through ``bare_loop.iter_detections`` (PNG decoding included); the ratio of our training step to a bare
PyTorch loop over the SAME torchvision FasterRCNN (goal <= 1.1: the wrapper costs nothing), and for reference a FasterRCNN with torchvision's COCO head settings (2000/2000 RPN proposals,
512 RoIs per image, 3 anchor aspect ratios) on the same backbone and size; peak memory (ru_maxrss).

Working resolution (design note). Simulated images are 400 px, clumps ~6.6 px FWHM, boxes ~16 px; Clump Scout
volunteers and the paper looked at the central 200 px, where the clumps are. The default ``crop 200,
image_size 200`` keeps native pixels (boxes 8-24 px on 4 px-stride maps, anchors 8/16/32/64) at 1/4 of the
cost of the full image. ``image_size 128`` (scale 0.64: boxes ~10 px, FWHM ~4 px, still 2.5 cells of the
stride-4 map per box; anchors scale with it) is ~2.4x cheaper per image, so the bench defaults to 128 to get
2.4x more training steps into the CPU budget; ``--image-size 200`` runs the native setting. The smallest
clumps (FWHM ~3 px -> 2 px) are the ones at risk at 128.

Sanity check of the whole pipeline (boxes, targets, matching): 12 tiny 64 px images with bright squares,
resnet18 from random init, lr 1e-3, batch 4 (an ad-hoc script, not part of the bench): detections appear
after ~50 steps and training-set F1 reaches
0.85-0.9 after ~60 steps. From random init a detector needs thousands of image-steps on faint simulated
clumps. Measured 2026-11-24 (2-core CPU, mostly idle), ``--galaxies 400 --minutes 13 --backbones
convnext_nano`` (128 px, lr 3e-4, random init, 256 train / 64 val galaxies, volunteer consensus labels):
7.2 train img/s -> 18 epochs in 13.1 min; on 80 held-out galaxies against truth.csv completeness 0.944,
purity 0.981, F1 0.962 (score 0.45), mAP@0.5 0.92 (validation F1 0.85 from epoch 7). An earlier run with
lr 1e-3 and no gradient clipping spiked its loss in epoch 1 (hence lr 3e-4 and clipping at 10).
The ImageNet-architecture baseline, same data and settings, ``--backbones torchvision_resnet50 --minutes 13``
(random init too; 4.5 train img/s, sized to 11 epochs = 10.6 min): completeness 0.850, purity 0.968,
F1 0.905 (score 0.57), mAP@0.5 0.80. Both meet the 0.85/0.85 goal; the Zoobot architecture leads on every
figure, with 2.5 min more training (not a like-for-like gap). Pretrained weights could not be downloaded.
Speed (``--skip-quality``, 40 galaxies): 200 px: 3.9 train / 14.9 inference img/s, overhead vs the bare loop
0.97x, 2.1x faster than torchvision's COCO head settings, decoding 6.8 ms/img, peak RSS 2.6 GB; 128 px:
6.6 / 30.4 img/s, overhead 1.04x. With several jobs sharing the CPU these figures drop 3-10x.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def simulate_and_aggregate(work: Path, galaxies: int, seed: int) -> tuple[Path, Path]:
    """The simulated project (reused if present) and its aggregation."""
    from clumptool.aggregation.pipeline import AggregateOptions, aggregate
    from clumptool.simulation.config import SimulationConfig
    from clumptool.simulation.project import simulate_project

    sim, agg = work / "project", work / "aggregated"
    marker = work / f"project-{galaxies}-{seed}.done"
    if not marker.exists():
        shutil.rmtree(sim, ignore_errors=True)
        shutil.rmtree(agg, ignore_errors=True)
        t = time.perf_counter()
        simulate_project(sim, SimulationConfig(galaxies=galaxies, seed=seed))
        print(f"simulated {galaxies} galaxies in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        aggregate(sim / "classifications.csv", sim / "subjects.csv", agg, AggregateOptions())
        print(f"aggregated the volunteers' clicks in {time.perf_counter() - t:.0f} s")
        marker.write_text("ok\n")
    return sim, agg


def quality(args, sim: Path, agg: Path, work: Path) -> list[dict]:
    from clumptool.detection.data import labelled_items, split_items
    from clumptool.detection.evaluate import evaluate_model
    from clumptool.detection.train import train

    items = labelled_items(agg / "boxes.parquet", sim / "images", agg / "subjects.parquet")
    trainval, test = split_items(items, 0.2, seed=args.seed + 1000)
    train_items, val_items = split_items(trainval, 0.2, seed=args.seed)
    test_csv = work / "test_subjects.csv"
    pd.DataFrame({"subject_id": [it.subject_id for it in test]}).to_csv(test_csv, index=False)
    n_boxes = sum(len(it.boxes) for it in train_items)
    print(f"\n(a) quality: {len(train_items)} train / {len(val_items)} val galaxies ({n_boxes} volunteer "
          f"consensus boxes), {len(test)} held-out galaxies scored against truth.csv")
    rows = []
    for backbone in args.backbones:
        out = work / f"model-{backbone}-{args.image_size}"
        epochs = args.epochs or epochs_for_budget(backbone, args, train_items, len(val_items))
        t = time.perf_counter()
        res = train(None, sim / "images", out, backbone=backbone, weights=None, image_size=args.image_size,
                    crop=args.crop, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                    max_minutes=args.minutes, patience=None, seed=args.seed, cache=True, workers=0,
                    progress=args.progress, items=(train_items, val_items),
                    accept_empty=True)  # the bench reports whatever F1 the budget reached, 0 included
        train_min = (time.perf_counter() - t) / 60
        rep = evaluate_model(out, sim / "truth.csv", sim / "images", out / "evaluation", subjects=test_csv,
                             progress=False)
        best = rep.metrics["scopes"]["overall"]["best_f1"]
        m50 = rep.metrics["map"]["class_agnostic"].get("map_50")
        row = {"backbone": backbone, "init": "random", "image_size": args.image_size, "crop": args.crop,
               "epochs": res.epochs, "steps": res.global_step, "train_min": round(train_min, 1),
               "val_f1@0.5": res.best_val_f1, "threshold": best["threshold"],
               "completeness": best["completeness"], "purity": best["purity"], "f1": best["f1"],
               "map50_agnostic": m50}
        rows.append(row)
        print(json.dumps(row))
    return rows


def epochs_for_budget(backbone: str, args, train_items, n_val: int) -> int:
    """Epochs that fit in --minutes (so the learning-rate schedule completes), from a few timed steps."""
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec

    spec = make_spec(backbone, image_size=args.image_size, crop=args.crop)
    imgs = _batch([it.path for it in train_items], spec, 3 * args.batch_size)
    step = _bare_step_time(build_model(spec), imgs, _targets(len(imgs), args.image_size), 2, args.batch_size)
    per_epoch = step * len(train_items) / args.batch_size + 0.35 * step * n_val / args.batch_size  # + validation
    epochs = max(1, int(0.92 * args.minutes * 60 / per_epoch))
    print(f"  {backbone}: {args.batch_size / step:.2f} train img/s -> {epochs} epochs in {args.minutes} min")
    return epochs


def _batch(paths: list[Path], spec, n: int) -> list[torch.Tensor]:
    from clumptool.detection.images import load_image, to_model_input

    return [to_model_input(load_image(p, spec.in_channels), spec)[0] for p in paths[:n]]


def _targets(n: int, size: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        c = torch.rand(3, 2, generator=g) * (size - 40) + 20
        side = 16.0 * size / 200
        out.append({"boxes": torch.cat([c - side / 2, c + side / 2], 1), "labels": torch.ones(3, dtype=torch.int64)})
    return out


def _bare_step_time(model, images: list[torch.Tensor], targets: list[dict], steps: int, batch: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for s in range(steps + 1):
        i = (s * batch) % len(images)
        x, y = images[i:i + batch], targets[i:i + batch]
        t = time.perf_counter()
        loss = sum(model(x, y).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s:  # the first step warms up allocators
            times.append(time.perf_counter() - t)
    return float(np.median(times))


class _StepTimer:
    """Lightning callback: wall time between consecutive training batch ends (data loading included)."""

    def __new__(cls):
        import lightning as L

        class Timer(L.Callback):
            def __init__(self):
                self.ends: list[float] = []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.ends.append(time.perf_counter())

        return Timer()


def speed(args, sim: Path, work: Path) -> dict:
    from bare_loop import iter_detections
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from clumptool.detection.data import labelled_items, split_items
    from clumptool.detection.io import load_model
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec
    from clumptool.detection.train import train

    backbone = args.backbones[0]
    size, batch, steps = args.image_size, args.batch_size, args.speed_steps
    print(f"\n(b) speed on CPU ({torch.get_num_threads()} threads): {backbone}, {size} px working size "
          f"(crop {args.crop}), batch {batch}, random init")
    agg = work / "aggregated"
    items = labelled_items(agg / "boxes.parquet", sim / "images", agg / "subjects.parquet")
    n_imgs = batch * (steps + 1)
    train_items, _ = split_items(items[: n_imgs + 2], 0.0, args.seed)
    spec = make_spec(backbone, image_size=size, crop=args.crop)
    paths = [it.path for it in train_items]
    t = time.perf_counter()
    imgs = _batch(paths, spec, n_imgs)
    decode_ms = 1000 * (time.perf_counter() - t) / n_imgs
    tg = _targets(n_imgs, size)
    torch.manual_seed(0)
    same = build_model(spec)
    # bare loop before and after ours: the CPU may be shared, so bracket the measurement
    bare_before = _bare_step_time(same, imgs, tg, steps, batch)
    out = work / "speed-model"
    timer = _StepTimer()
    # images cached like the bare loop's (decoding is reported separately: workers hide it in real runs)
    train(None, sim / "images", out, backbone=backbone, image_size=size, crop=args.crop, epochs=1, batch_size=batch,
          patience=None, seed=args.seed, workers=0, cache=True, progress=False, items=(train_items[:n_imgs], []),
          callbacks=[timer], log_every_n_steps=1)
    ours = float(np.median(np.diff(timer.ends)))
    bare = 0.5 * (bare_before + _bare_step_time(same, imgs, tg, steps, batch))
    torch.manual_seed(0)
    coco = FasterRCNN(build_model(spec).backbone, num_classes=3, min_size=size, max_size=size,
                      image_mean=spec.mean, image_std=spec.std,
                      rpn_anchor_generator=AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4))
    coco_t = _bare_step_time(coco, imgs, tg, steps, batch)

    model, spec2 = load_model(out)
    test_paths = [it.path for it in items[: max(4 * batch, 16)]]
    list(iter_detections(model, spec2, test_paths[:batch], batch_size=batch))  # warm-up
    t = time.perf_counter()
    n = sum(1 for _ in iter_detections(model, spec2, test_paths, batch_size=batch))
    infer = n / (time.perf_counter() - t)
    res = {"backbone": backbone, "image_size": size, "batch": batch,
           "train_img_per_s": round(batch / ours, 2), "bare_same_model_img_per_s": round(batch / bare, 2),
           "overhead_vs_bare_same_model": round(ours / bare, 3),
           "coco_settings_bare_img_per_s": round(batch / coco_t, 2),
           "ours_vs_coco_settings": round(ours / coco_t, 3),
           "inference_img_per_s": round(infer, 2), "decode_ms_per_img": round(decode_ms, 1),
           "peak_rss_mb": round(peak_rss_mb())}
    print(json.dumps(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Tiny project, ~1 min per model: proves it runs.")
    ap.add_argument("--minutes", type=float, default=15.0, help="Training budget per backbone (minutes).")
    ap.add_argument("--galaxies", type=int, default=800)
    ap.add_argument("--backbones", default="convnext_nano,torchvision_resnet50")
    ap.add_argument("--image-size", type=int, default=128,
                    help="Working size (128: ~2.4x more training steps in the budget than 200; see the note).")
    ap.add_argument("--crop", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, help="[default: as many as fit in --minutes, timed per backbone]")
    ap.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (train's default).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-steps", type=int, default=6)
    ap.add_argument("--workdir", type=Path, default=Path("bench-output/detection"))
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--progress", action="store_true", help="Show Lightning's progress bars.")
    args = ap.parse_args()
    if args.quick:
        args.galaxies, args.minutes, args.speed_steps = min(args.galaxies, 40), min(args.minutes, 1.0), 2
        args.image_size = min(args.image_size, 96)
        args.workdir = args.workdir.with_name(args.workdir.name + "-quick")
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    torch.set_flush_denormal(True)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sim, agg = simulate_and_aggregate(work, args.galaxies, args.seed)
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if not args.skip_quality:
        report["quality"] = quality(args, sim, agg, work)
    if not args.skip_speed:
        report["speed"] = speed(args, sim, work)
    report["peak_rss_mb"] = round(peak_rss_mb())
    report["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nsummary")
    for row in report.get("quality", []):
        ok = row["completeness"] >= 0.85 and row["purity"] >= 0.85
        print(f"  {row['backbone']:>22} ({row['init']} init, {row['image_size']} px, {row['train_min']} min, "
              f"{row['epochs']} epochs): completeness {row['completeness']:.3f}  purity {row['purity']:.3f}  "
              f"F1 {row['f1']:.3f} @ score {row['threshold']}  mAP50 {row['map50_agnostic']}  "
              f"goal >= 0.85/0.85: {'met' if ok else 'NOT met'}")
    if "speed" in report:
        s = report["speed"]
        print(f"  speed: train {s['train_img_per_s']} img/s, inference {s['inference_img_per_s']} img/s, "
              f"overhead vs bare loop {s['overhead_vs_bare_same_model']}x (goal <= 1.1), "
              f"vs COCO head settings {s['ours_vs_coco_settings']}x, peak RSS {s['peak_rss_mb']} MB")
    print(f"  report: {work / 'report.json'} ({report['minutes']} min)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
