"""Detection evaluation/prediction benchmark: metric speed at Clump Scout scale, predict throughput and memory.

    .venv/bin/python bench/detection_eval.py                      # metrics on 20k galaxies, predict 40 and 160 images
    .venv/bin/python bench/detection_eval.py --predict-images 500 # predict 500 and 2000 images

1. Completeness/purity curves (greedy and Hungarian) and COCO mAP on a synthetic Clump Scout-sized evaluation:
   20,000 galaxies, ~2.3 true clumps each (46k, as in the real consensus), ~10 detections each: a jittered copy
   of most true clumps plus false positives, scores higher for true ones. The printed completeness/purity at
   0.5 can be checked against the generating rates.
2. ``predict_catalogue`` over N and 4N copies of a 400 px image (central 200 px crop) with a random-init
   ConvNeXt-nano detector, CPU, each run in a fresh process: images/s and peak RSS, which should not grow
   with N (images are streamed, rows written in row groups).
Every figure printed is measured by this script.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_eval(n_gal: int, seed: int = 0):
    from clumptool.aggregation.boxes import square_boxes
    from clumptool.detection.metrics import ImageResult

    rng = np.random.default_rng(seed)
    images, n_found = [], 0
    for k in range(n_gal):
        n_true = rng.poisson(2.3)
        fwhm = rng.uniform(3, 8)
        txy = rng.uniform(20, 180, size=(n_true, 2))
        found = rng.random(n_true) < 0.85
        n_found += int(found.sum())
        pxy = txy[found] + rng.normal(0, 0.3 * fwhm, size=(found.sum(), 2))
        n_fp = rng.poisson(1.5)
        fxy = rng.uniform(20, 180, size=(n_fp, 2))
        ps = np.r_[rng.beta(5, 2, found.sum()), rng.beta(2, 5, n_fp)]
        pb = square_boxes(*np.r_[pxy, fxy].T, 2.5 * fwhm)
        tb = square_boxes(*txy.T, 2.5 * fwhm)
        images.append(ImageResult(str(k), pb, ps, rng.integers(1, 3, len(pb)), tb, rng.integers(1, 3, n_true)))
    return images, n_found


def bench_metrics(n_gal: int) -> None:
    from clumptool.detection.metrics import MatchSettings, evaluate_images, mean_average_precision

    images, n_found = synthetic_eval(n_gal)
    n_true = sum(len(im.true_boxes) for im in images)
    n_det = sum(len(im.pred_boxes) for im in images)
    print(f"synthetic evaluation: {n_gal} galaxies, {n_true} true clumps, {n_det} detections "
          f"({n_found} jittered copies of true clumps, jitter sigma 0.3 FWHM)")
    for assignment in ("greedy", "hungarian"):
        t = time.perf_counter()
        ev = evaluate_images(images, {1: "clump", 2: "odd_clump"}, MatchSettings(assignment=assignment), 0.5)
        dt = time.perf_counter() - t
        o = ev.summary["overall"]
        print(f"  {assignment:<9} curves for 3 scopes in {dt:6.2f} s; at 0.5: completeness "
              f"{o['at_threshold']['completeness']:.3f}, purity {o['at_threshold']['purity']:.3f}; best F1 "
              f"{o['best_f1']['f1']:.3f} at {o['best_f1']['threshold']:.3f}")
    t = time.perf_counter()
    m = mean_average_precision(images)
    print(f"  COCO mAP (torchmetrics, pycocotools) in {time.perf_counter() - t:6.2f} s: mAP@0.5 {m['map_50']:.3f}, "
          f"mAP@[.5:.95] {m['map']:.3f}")


def bench_predict(n_images: int) -> None:
    import torch
    from PIL import Image

    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model
    from clumptool.detection.predict import predict_catalogue
    from clumptool.detection.spec import make_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        torch.manual_seed(0)
        spec = make_spec("convnext_nano", image_size=200, crop=200)
        model = build_model(spec)
        save_model(tmp / "model", model, spec)
        (tmp / "images").mkdir()
        rng = np.random.default_rng(0)
        first = tmp / "images" / "1000000.png"
        Image.fromarray(rng.integers(0, 255, size=(400, 400, 3), dtype=np.uint8)).save(first)
        for k in range(1, n_images):
            (tmp / "images" / f"{1000000 + k}.png").hardlink_to(first)
        t = time.perf_counter()
        res = predict_catalogue(tmp / "model", tmp / "images", tmp / "out" / "catalogue.parquet",
                                score_threshold=0.05, devices="cpu", batch_size=4, progress=False)
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"predict: {res.n_images} images of 400 px (central 200 px) in {dt:.1f} s = "
              f"{res.n_images / dt:.2f} images/s on {torch.get_num_threads()} CPU threads, {res.n_clumps} rows; "
              f"peak RSS of the process {rss:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--galaxies", type=int, default=20_000)
    ap.add_argument("--predict-images", type=int, default=40, help="N (0 = skip predict)")
    ap.add_argument("--predict-only", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.predict_only:
        bench_predict(args.predict_only)
        return
    bench_metrics(args.galaxies)
    for n in (args.predict_images, 4 * args.predict_images) if args.predict_images else ():
        subprocess.run([sys.executable, __file__, "--predict-only", str(n)], check=True)


if __name__ == "__main__":
    main()
