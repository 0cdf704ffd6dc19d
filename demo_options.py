"""The sizes of ``clumptool demo`` (its defaults defined once; the CLI reads them at start-up, so nothing heavy
is imported here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoConfig:
    """Sizes of the demo: small enough for a few minutes on 2 CPU cores."""

    galaxies: int = 300
    seed: int = 7
    sim_image_size: int = 200      # half the Clump Scout 400 px scale: everything 2x cheaper per clump
    test_fraction: float = 0.2
    pool_fraction: float = 0.2
    backbone: str = "resnet18"
    crop: int = 64                 # the central 64 px, where most clumps are ...
    image_size: int = 64           # ... at native resolution (no resampling of ~3 px clumps)
    epochs: int = 15               # fixed, not a wall-clock cap
    batch_size: int = 4
    lr: float = 1e-3
    select_n: int = 12
    random_control: int = 4
    round2_volunteers: int | None = 8  # classifications per uploaded galaxy when round 2 is fetched (None: all)
