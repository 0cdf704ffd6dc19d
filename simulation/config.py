"""Parameters of a simulated Clump Scout project, validated on construction.

Defaults and their sources:

* images 400 x 400 px like the Clump Scout subjects; the paper's detector sees the central 200 x 200 (``cutout``);
* PSF: Gaussian, seeing drawn SDSS-like (r-band median ~1.3-1.4 arcsec, range ~0.9-2.0; SDSS DR7 imaging
  quality), and the pixel scale chosen so the FWHM in image pixels follows the real Clump Scout boxes
  (side = 2.5 x FWHM, median 16.6 px -> FWHM ~6.6 px);
* clump layouts (number, positions, spacing, odd share) drawn from 4,000 real Clump Scout galaxies;
* sky noise Gaussian, unit sigma per band in flux units; galaxy central surface brightness 25-120 sigma;
* colour: Lupton et al. (2004) asinh RGB (astropy.visualization.make_lupton_rgb) of i, r, g as R, G, B;
* volunteers: ~20 per subject as in Clump Scout (1.74M classifications / 85k subjects, Dickinson et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clumptool.common.errors import ClumptoolError

VOLUNTEER_MODELS = ("realistic", "perfect", "noisy")


@dataclass(frozen=True)
class VolunteerModelConfig:
    """How simulated volunteers click. Rates are per volunteer; the population mixes kinds of volunteers."""

    name: str = "realistic"
    detection_mean: float = 0.78  # chance to click a bright clump (normal volunteers)
    detection_spread: float = 12.0  # Beta concentration around the mean
    false_clicks_mean: float = 0.3  # mean spurious clicks per classification (normal volunteers)
    scatter_px: tuple[float, float] = (1.2, 3.5)  # click scatter (sigma per axis) range
    tool_confusion_mean: float = 0.2  # chance to use the wrong tool
    careless_fraction: float = 0.08
    random_clicker_fraction: float = 0.02
    expert_fraction: float = 0.05
    anonymous_fraction: float = 0.15
    repeat_fraction: float = 0.004  # classifications repeated by the same volunteer
    fem_fraction: float = 0.3  # share of classifications made with the new front end (the latest ones)
    snr_half: float = 4.0  # clump peak S/N at which detection drops to half
    snr_width: float = 0.8

    @classmethod
    def preset(cls, name: str) -> VolunteerModelConfig:
        if name == "realistic":
            return cls()
        if name == "perfect":
            return cls(name="perfect", detection_mean=1.0, false_clicks_mean=0.0, scatter_px=(0.0, 0.0),
                       tool_confusion_mean=0.0, careless_fraction=0.0, random_clicker_fraction=0.0,
                       expert_fraction=0.0, repeat_fraction=0.0, snr_width=1e-6)
        if name == "noisy":
            return cls(name="noisy", detection_mean=0.6, false_clicks_mean=0.8, scatter_px=(2.0, 5.0),
                       tool_confusion_mean=0.35, careless_fraction=0.2, random_clicker_fraction=0.06,
                       expert_fraction=0.0)
        raise ClumptoolError(f"unknown volunteer model {name!r} (use one of {', '.join(VOLUNTEER_MODELS)})")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything ``clumptool simulate`` can be told."""

    galaxies: int = 200
    volunteers_per_subject: int = 20
    image_size: int = 400
    cutout: int | None = None  # default: half the image side (200 for 400 px images, as in the paper)
    seed: int = 0
    clumpy_fraction: float = 0.6
    volunteer_model: VolunteerModelConfig = field(default_factory=VolunteerModelConfig)
    images: bool = True
    first_subject_id: int = 90_000_000
    first_classification_id: int = 400_000_000
    project_id: int = 12345
    workflow_id: int = 99999
    workflow_version: str = "12.34"
    subject_set_id: int = 77000
    detectable_snr: float = 4.0
    workers: int = 0  # image rendering processes; 0 = as many as CPUs

    def __post_init__(self) -> None:
        checks = [
            (self.galaxies >= 1, f"--galaxies must be >= 1 (got {self.galaxies})"),
            (self.volunteers_per_subject >= 1,
             f"--volunteers-per-subject must be >= 1 (got {self.volunteers_per_subject})"),
            (64 <= self.image_size <= 4096, f"--image-size must be between 64 and 4096 (got {self.image_size})"),
            (self.cutout is None or 0 < self.cutout <= self.image_size,
             f"--cutout must be between 1 and the image size (got {self.cutout})"),
            (0.0 <= self.clumpy_fraction <= 1.0, f"--clumpy-fraction must be in [0, 1] (got {self.clumpy_fraction})"),
            (self.seed >= 0, "--seed must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ClumptoolError(msg)

    @property
    def scale(self) -> float:
        """Image size relative to the 400 px Clump Scout images (layouts and sizes scale with it)."""
        return self.image_size / 400.0
