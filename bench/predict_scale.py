"""predict at scale on Lightning: peak RSS and throughput per process for a small and a large image list.

    .venv/bin/python bench/predict_scale.py                          # 1,000 and 20,000 images, 1 CPU process
    .venv/bin/python bench/predict_scale.py --sizes 1000 5000 --devices 2

Each size runs ``clumptool predict`` (the library function, through ``Trainer.predict`` and the shard writer)
in a fresh process over N hard-linked copies of 16 distinct small PNGs (``--image-px``, default 32) with a
random-init resnet18 detector on 32 px inputs whose classifier reports clumps on every galaxy (so rows are
written). Every process (rank) prints its own peak RSS (``ru_maxrss``), the seconds inside ``Trainer.predict``
and the images it ran; images/s is per process. Memory should not grow with N: nothing is kept per image
(whole-batch items, ``return_predictions=False``, a Parquet shard written as soon as it is finished).

Measured on the shared 2-core CPU (torch 2.14 CPU, lightning 2.6.6, batch 32, shards of up to 1000 images,
load average 10-13 from other engineers' jobs; ``--sizes 1000 20000 --devices 1``, 1 thread)::

    predict: 32 px PNGs, resnet18 detector on 32 px, batch 32, --devices 1 (...), 1 thread(s) per process
      images rank images run predict s img/s/proc peak RSS MB  wall s
        1000    0       1000      42.2         24        1287    51.7
       20000    0      20000     668.0         30        1312   681.0

Peak RSS 1287 MB -> 1312 MB (+2 %) for 20x the images: flat (most of it is torch + Lightning + the model).
Throughput is machine-load bound here; per-process throughput of a real model is in bench/detection_eval.py.

Two CPU processes (Lightning DDP over gloo; ``--sizes 1000 5000 --devices 2``, same load; 20,000 not run with
two processes for lack of time on the shared machine). Each rank ran half the images; RSS is per process::

      images rank images run predict s img/s/proc peak RSS MB  wall s
        1000    0        512      22.8         22        1282    79.2
        1000   >0        488      24.8         20        1281    31.4
        5000    0       2504     138.6         18        1320   196.3
        5000   >0       2496     143.6         17        1281   153.6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_inputs(root: Path, n: int, px: int) -> Path:
    """``n`` images: hard links to 16 distinct ``px`` px PNGs with a few bright spots each."""
    import numpy as np
    from PIL import Image

    base = root / "base"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(16):
        arr = rng.uniform(0, 40, (px, px, 3)).astype(np.uint8)
        for _ in range(1 + k % 3):
            x, y = rng.integers(4, px - 8, 2)
            arr[y:y + 4, x:x + 4] = 250
        Image.fromarray(arr).save(base / f"{k}.png")
    images = root / f"images-{n}"
    images.mkdir()
    for i in range(n):
        os.link(base / f"{i % 16}.png", images / f"{100000 + i}.png")
    return images


def make_model(folder: Path) -> Path:
    import torch

    from clumptool.detection.io import save_model
    from clumptool.detection.model import build_model
    from clumptool.detection.spec import make_spec

    torch.manual_seed(0)
    spec = make_spec("resnet18", image_size=32, crop=None, fpn_channels=16, representation_size=32)
    model = build_model(spec)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0, 1.0]))
    return save_model(folder, model, spec)


def inner(args: argparse.Namespace) -> None:
    """One predict run (re-run by Lightning once per extra CPU process); each rank prints one JSON line."""
    import lightning as L

    from clumptool.detection.predict import predict_catalogue

    class Clock(L.Callback):
        def on_predict_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_predict_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.t0

    clock = Clock()
    t0 = time.perf_counter()
    res = predict_catalogue(args.model, args.images, args.out, score_threshold=0.3, batch_size=args.batch_size,
                            devices=args.devices, n_overlay=0, progress=False, callbacks=[clock])
    per = {"rank": 0 if res.is_global_zero else None, "world_size": res.world_size,
           "images": res.n_images_computed,
           "predict_s": round(getattr(clock, "seconds", float("nan")), 2),
           "wall_s": round(time.perf_counter() - t0, 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "n_clumps": res.n_clumps}
    print("RESULT " + json.dumps(per), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--devices", default="1")
    ap.add_argument("--image-px", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per process (OMP_NUM_THREADS)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-predict-scale-") as tmp:
        root = Path(tmp)
        model = make_model(root / "model")
        print(f"predict: {args.image_px} px PNGs, resnet18 detector on 32 px, batch {args.batch_size}, "
              f"--devices {args.devices} (CPU processes when there is no GPU), {args.threads} thread(s) per process")
        print(f"{'images':>8} {'rank':>4} {'images run':>10} {'predict s':>9} {'img/s/proc':>10} {'peak RSS MB':>11} "
              f"{'wall s':>7}")
        for n in args.sizes:
            images = make_inputs(root / f"in{n}", n, args.image_px)
            cmd = [sys.executable, os.path.abspath(__file__), "--inner", "--model", str(model), "--images",
                   str(images), "--out", str(root / f"out{n}"), "--devices", args.devices, "--batch-size",
                   str(args.batch_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(args.threads)})
            if proc.returncode != 0:
                sys.exit(proc.stderr[-3000:])
            rows = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            for r in sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0)):
                rate = r["images"] / r["predict_s"] if r["predict_s"] else float("nan")
                rank = "0" if r["rank"] == 0 else ">0"
                print(f"{n:>8} {rank:>4} {r['images']:>10} {r['predict_s']:>9.1f} {rate:>10.0f} "
                      f"{r['peak_rss_mb']:>11.0f} {r['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
