"""Parameters of a simulated Clump Scout project, validated on construction.

Defaults and their sources:

* images 400 x 400 px like the Clump Scout subjects; the paper's detector sees the central 200 x 200 (``cutout``);
* PSF: Gaussian, seeing drawn SDSS-like (r-band median ~1.3-1.4 arcsec, range ~0.9-2.0; SDSS DR7 imaging
  quality), and the pixel scale chosen so the FWHM in image pixels follows the real Clump Scout boxes
  (side = 2.5 x FWHM, median 16.6 px -> FWHM ~6.6 px);
* clump layouts (number, positions, spacing, odd share) drawn from 4,000 real Clump Scout galaxies;
* sky noise Gaussian, unit sigma per band in flux units; galaxy central surface brightness 25-120 sigma;
* colour: Lupton et al. (2004) asinh RGB (astropy.visualization.make_lupton_rgb) of i, r, g as R, G, B;
* volunteers: ~20 per subject as in Clump Scout (1.74M classifications / 85k subjects, Dickinson et al. 2022);
* crowds (``--crowd``): behaviours layered on the volunteer model, see :class:`CrowdConfig` and ``CROWD_TABLE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clumptool.common.errors import ClumptoolError
from clumptool.common.options import raise_problems

VOLUNTEER_MODELS = ("realistic", "perfect", "noisy")
CROWDS = ("default", "bulge", "distractor", "sparse", "confusion")


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
class CrowdConfig:
    """Behaviours of a volunteer population beyond clicking clumps, layered on :class:`VolunteerModelConfig`.

    Each crowd is a population that real projects have (Clump Scout's own notebooks drop "bulge markings that
    snuck through"; careless volunteers mark bright stars and companions). Every per-volunteer rate is drawn
    once per volunteer and written to volunteers_truth.csv, and every click's target to marks_truth.csv, so a
    bench can tell a bulge or star click from a clump. Crowd draws come from their own random stream: with one
    seed every crowd sees the same galaxies and volunteers, and the bulge crowd's clicks are exactly the
    default crowd's plus its bulge marks (crowds that change skills also change which clumps get clicked).

    * bulge: ``bulge_fraction`` of the volunteers mark the galaxy's centre in a share ``bulge_rate`` (drawn
      per volunteer, uniform in the range) of their classifications, scattered by their click scatter and a
      share of the bulge's size; each bright companion (central brightness >= ``bright_companion_sb``) gets
      its centre marked with probability ``companion_centre_rate`` by those volunteers.
    * distractor: ``distractor_fraction`` of the volunteers (taken from the normal ones) are careless
      (detection uniform in ``distractor_detection``); in a share ``distractor_rate`` (Beta, mean and
      concentration per volunteer) of their classifications they mark each foreground star, companion galaxy
      and noise peak of the image with probability ``distractor_consistency`` (Beta per volunteer; noise peaks
      at half that). ``noise_peaks_per_image`` (Poisson) faint compact peaks (peak S/N in
      ``noise_peak_snr``) are rendered on the sky, away from the disc, so the image shows what is clicked.
    * sparse: each subject gets a number of volunteers drawn uniformly in ``volunteers_range``.
    * confusion: tool confusion drawn around ``tool_confusion_mean`` (overrides the volunteer model's), and
      every mark of a volunteer is shifted by a fixed per-volunteer offset of length uniform in
      ``offset_px`` (scaled with the image) and random direction.
    """

    name: str = "default"
    bulge_fraction: float = 0.0
    bulge_rate: tuple[float, float] = (0.5, 0.95)
    bulge_odd_share: float = 0.3  # bulge marks made with the "odd clump" tool (bulges are red)
    bulge_spread: float = 0.3  # scatter of a bulge mark, in bulge effective radii (added to the click scatter)
    companion_centre_rate: float = 0.3
    bright_companion_sb: float = 15.0
    distractor_fraction: float = 0.0
    distractor_detection: tuple[float, float] = (0.3, 0.7)
    distractor_rate: float = 0.6
    distractor_rate_spread: float = 6.0
    distractor_consistency: float = 0.8
    distractor_consistency_spread: float = 8.0
    distractor_odd_share: float = 0.4  # distractor marks made with the "odd clump" tool
    noise_peaks_per_image: float = 0.0
    noise_peak_snr: tuple[float, float] = (5.0, 9.0)
    volunteers_range: tuple[int, int] | None = None
    tool_confusion_mean: float | None = None
    offset_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        def share(v: float) -> bool:
            return 0.0 <= v <= 1.0

        def interval(v: tuple[float, float], lo: float, hi: float) -> bool:
            return len(v) == 2 and lo <= v[0] <= v[1] <= hi

        checks = [
            (self.name in CROWDS, f"unknown crowd {self.name!r}: use --crowd with one of {', '.join(CROWDS)}"),
            (share(self.bulge_fraction) and interval(self.bulge_rate, 0, 1) and share(self.companion_centre_rate)
             and self.bulge_spread >= 0 and share(self.bulge_odd_share), "bulge crowd: fractions and rates must lie in [0, 1]"),
            (share(self.distractor_fraction) and interval(self.distractor_detection, 0, 1)
             and 0 < self.distractor_rate < 1 and 0 < self.distractor_consistency < 1
             and self.distractor_rate_spread > 0 and self.distractor_consistency_spread > 0
             and share(self.distractor_odd_share),
             "distractor crowd: fractions in [0, 1], rate and consistency means in (0, 1), spreads > 0"),
            (self.noise_peaks_per_image >= 0 and interval(self.noise_peak_snr, 0, 1e4),
             "noise peaks: rate >= 0 and S/N range low <= high"),
            (self.volunteers_range is None or interval(self.volunteers_range, 1, 10_000),
             "sparse crowd: volunteers_range must be (low, high) with 1 <= low <= high"),
            (self.tool_confusion_mean is None or share(self.tool_confusion_mean),
             "confusion crowd: tool_confusion_mean must lie in [0, 1]"),
            (interval(self.offset_px, 0, 1e3), "confusion crowd: offset_px must be (low, high) with 0 <= low <= high"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ClumptoolError(msg)

    @classmethod
    def preset(cls, name: str) -> CrowdConfig:
        """The named crowd (see CROWD_TABLE); an unknown name is a user error naming --crowd."""
        presets = {
            "default": {},
            "bulge": dict(bulge_fraction=0.3),
            "distractor": dict(distractor_fraction=0.2, noise_peaks_per_image=1.5),
            "sparse": dict(volunteers_range=(6, 10)),
            "confusion": dict(tool_confusion_mean=0.4, offset_px=(1.5, 4.0)),
        }
        if name not in presets:
            raise ClumptoolError(f"--crowd {name!r} is not a crowd: use one of {', '.join(CROWDS)}")
        return cls(name=name, **presets[name])

    @property
    def needs_objects(self) -> bool:
        """True when volunteers click scene objects (bulges, stars, companions, noise peaks)."""
        return self.bulge_fraction > 0 or self.distractor_fraction > 0


# One line per crowd, for the README and ``clumptool simulate --help``.
CROWD_TABLE = (
    ("default", "today's realistic crowd: ~20 volunteers per subject, varied skill, 8% careless, 2% random "
                "clickers, ~20% tool confusion, ~0.3 spurious clicks per classification"),
    ("bulge", "as default, plus 30% of volunteers mark the galaxy's centre (bulge) in 50-95% of their "
              "classifications, and bright companions' centres 30% of the time"),
    ("distractor", "as default, plus a careless 20% minority (detection 30-70%) that, in ~60% of its "
                   "classifications, marks each foreground star, companion galaxy (p ~ 0.8 per volunteer) and "
                   "faint noise peak (half that); 1.5 noise peaks per image rendered on the sky"),
    ("sparse", "as default, but 6-10 volunteers per subject (uniform) instead of 20"),
    ("confusion", "as default, but odd/normal swapped 40% of the time on average and every volunteer's marks "
                  "shifted by a fixed 1.5-4 px offset in a direction of their own"),
)


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
    crowd: CrowdConfig = field(default_factory=CrowdConfig)
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
            (self.galaxies >= 1, f"--galaxies must be at least 1 (got {self.galaxies}); e.g. --galaxies 200"),
            (self.volunteers_per_subject >= 1,
             f"--volunteers-per-subject must be at least 1 (got {self.volunteers_per_subject}); Clump Scout had 20"),
            (64 <= self.image_size <= 4096,
             f"--image-size must be between 64 and 4096 px (got {self.image_size}); Clump Scout images are 400"),
            (self.cutout is None or 0 < self.cutout <= self.image_size,
             f"--cutout must be between 1 and the image size {self.image_size} (got {self.cutout}); "
             "leave it out for half the image side"),
            (0.0 <= self.clumpy_fraction <= 1.0,
             f"--clumpy-fraction is a share of galaxies and must be in [0, 1] (got {self.clumpy_fraction})"),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (self.workers >= 0, f"workers must be 0 (all CPUs) or more (got {self.workers})"),
            (self.first_subject_id >= 1,
             f"--first-subject-id must be a positive integer (got {self.first_subject_id})"),
            (self.first_classification_id >= 1,
             f"--start-classification-id must be a positive integer (got {self.first_classification_id})"),
        ]
        if self.crowd.volunteers_range is not None:
            lo, hi = self.crowd.volunteers_range
            # the default count means "not given": this crowd draws its own
            checks.append((self.volunteers_per_subject == SimulationConfig.volunteers_per_subject,
                           f"--volunteers-per-subject cannot be combined with --crowd {self.crowd.name}, which "
                           f"draws {lo}-{hi} volunteers per subject; drop one of the two options"))
        raise_problems(msg for ok, msg in checks if not ok)

    def viewer_counts(self, rng, n_subjects: int):
        """Volunteers per subject: the fixed number, or the crowd's range (drawn with the crowd's stream)."""
        if self.crowd.volunteers_range is None:
            return np.full(n_subjects, self.volunteers_per_subject, dtype=np.int64)
        lo, hi = self.crowd.volunteers_range
        return rng.integers(lo, hi + 1, n_subjects)

    @property
    def max_viewers(self) -> int:
        """The most volunteers any subject can get (sizes the volunteer pool)."""
        return self.crowd.volunteers_range[1] if self.crowd.volunteers_range else self.volunteers_per_subject

    @property
    def mean_viewers(self) -> float:
        if self.crowd.volunteers_range is None:
            return float(self.volunteers_per_subject)
        return sum(self.crowd.volunteers_range) / 2.0

    @property
    def scale(self) -> float:
        """Image size relative to the 400 px Clump Scout images (layouts and sizes scale with it)."""
        return self.image_size / 400.0


def crowd_table_markdown() -> str:
    """CROWD_TABLE as a Markdown table with each crowd's parameters (for the README)."""
    lines = ["| `--crowd` | Who clicks what | Parameters (simulation/config.py `CrowdConfig`) |", "|---|---|---|"]
    base = CrowdConfig()
    for name, text in CROWD_TABLE:
        crowd = CrowdConfig.preset(name)
        changed = {k: v for k, v in vars(crowd).items() if k != "name" and v != getattr(base, k)}
        params = ", ".join(f"`{k}={v}`" for k, v in changed.items()) or "VolunteerModelConfig defaults"
        lines.append(f"| `{name}` | {text} | {params} |")
    return "\n".join(lines)
