"""First check on a GPU machine: train a few hundred steps in mixed precision and predict through Lightning.

    .venv/bin/python bench/gpu_check.py            # on one GPU: bf16-mixed and 16-mixed, ~3 minutes
    .venv/bin/python bench/gpu_check.py --tiny     # a few steps on tiny images (what the tests run on CPU)

For each precision: ``clumptool train`` (the library function: Lightning, AdamW, the real data pipeline) for
``--steps`` steps on synthetic galaxies, then ``clumptool predict`` with the trained model through
``Trainer.predict`` and the shard writer. Prints training and inference images/s and the peak GPU memory
(``torch.cuda.max_memory_allocated``) of each phase. Without CUDA the same steps run on the CPU in 32-bit
precision and the script says what it skipped (mixed precision and GPU memory need CUDA); bf16-mixed is
skipped on GPUs without bfloat16 support. Exit code 0 means every phase ran and produced a catalogue.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(root: Path, n: int, px: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` noisy galaxies with 0-3 bright square clumps and their boxes (the shape train reads)."""
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    side = max(4, px // 12)
    for i in range(n):
        arr = rng.uniform(0, 40, (px, px, 3)).astype(np.uint8)
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.integers(side, px - 2 * side, 2)
            arr[y:y + side, x:x + side] = 250
            rows.append({"subject_id": 1000 + i, "x1": x - 2.0, "y1": y - 2.0, "x2": x + side + 2.0,
                         "y2": y + side + 2.0, "label": 1})
        Image.fromarray(arr).save(images / f"{1000 + i}.png")
    boxes = root / "boxes.csv"
    pd.DataFrame(rows, columns=["subject_id", "x1", "y1", "x2", "y2", "label"]).to_csv(boxes, index=False)
    return images, boxes


def timer():
    import lightning as L

    class Clock(L.Callback):
        seconds = float("nan")

        def _start(self, *_):
            self.t0 = time.perf_counter()

        def _end(self, *_):
            self.seconds = time.perf_counter() - self.t0

        on_train_start = on_predict_start = _start
        on_train_end = on_predict_end = _end

    return Clock()


def run(args: argparse.Namespace) -> int:
    import torch

    from clumptool.detection.predict import predict_catalogue
    from clumptool.detection.train import quiet_lightning, train

    cuda = torch.cuda.is_available()
    precisions = list(args.precisions)
    skipped = []
    if not cuda:
        skipped = [p for p in precisions if p != "32"]
        precisions = ["32"]
        print(f"no CUDA device: running the same steps on the CPU in 32-bit; skipped (need CUDA): "
              f"{', '.join(skipped) or 'nothing'}, peak GPU memory")
    elif "bf16-mixed" in precisions and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16-mixed")
        skipped.append("bf16-mixed")
        print("this GPU has no bfloat16 support: bf16-mixed skipped")
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"{args.backbone}, {args.px} px images (model input {args.px} px), batch {args.batch_size}, "
          f"{args.steps} training steps, {args.predict_images} images predicted")
    print(f"{'precision':>10} {'phase':>8} {'images/s':>9} {'seconds':>8} {'peak GPU MB':>11}")
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        images, boxes = make_images(root / "train", args.train_images, args.px)
        pred_images, _ = make_images(root / "predict", args.predict_images, args.px, seed=1)
        for precision in precisions:
            clock = timer()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with quiet_lightning():
                res = train(boxes, images, root / f"model-{precision}", backbone=args.backbone,
                            image_size=args.px, crop=None, epochs=10_000, max_steps=args.steps,
                            batch_size=args.batch_size, val_fraction=0.1, patience=None, devices=1,
                            precision=precision, progress=False, callbacks=[clock], workers=workers,
                            accept_empty=True)  # a speed check: a few steps find nothing yet
            mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            rate = res.global_step * args.batch_size / clock.seconds
            print(f"{precision:>10} {'train':>8} {rate:>9.1f} {clock.seconds:>8.1f} {mem:>11.0f}", flush=True)
            failures += res.global_step != args.steps

            clock = timer()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            pred = predict_catalogue(res.out_dir, pred_images, root / f"cat-{precision}", score_threshold=0.05,
                                     batch_size=args.batch_size, devices="1", precision=precision,
                                     num_workers=workers, n_overlay=0, progress=False, callbacks=[clock])
            mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            rate = pred.n_images / clock.seconds
            print(f"{precision:>10} {'predict':>8} {rate:>9.1f} {clock.seconds:>8.1f} {mem:>11.0f}", flush=True)
            failures += not pred.catalogue_path.exists() or pred.n_images != args.predict_images
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    print("OK" if not failures else f"{failures} phase(s) did not complete as asked")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="4 steps on 8 tiny images with resnet18 (a smoke test)")
    ap.add_argument("--precisions", nargs="+", default=["bf16-mixed", "16-mixed"],
                    choices=["32", "16-mixed", "bf16-mixed"])
    ap.add_argument("--backbone", default="convnext_nano")
    ap.add_argument("--px", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--predict-images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers [default: train's choice]")
    args = ap.parse_args(argv)
    if args.tiny:
        args.backbone, args.px, args.steps, args.batch_size = "resnet18", 48, 4, 2
        args.train_images, args.predict_images, args.workers = 8, 8, 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
