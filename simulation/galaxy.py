"""One simulated galaxy: its scene (what is where) and its gri image rendered to an RGB PNG.

A scene is an exponential disc (with spiral arms or an irregular, patchy modulation) plus a Sérsic bulge,
star-forming clumps (point-like sources seen through the PSF: Gaussians of the PSF's width, blue), "odd" clumps
(redder than the normal ones, or far off the disc), foreground stars and neighbouring galaxies as distractors.
Smooth light is convolved with a Gaussian PSF; point sources are drawn as the PSF itself. Sky noise is
Gaussian with unit sigma per band. The colour image is the Lupton et al. (2004) asinh composite of i, r, g.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from astropy.visualization import make_lupton_rgb
from scipy.ndimage import gaussian_filter, zoom

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

# relative g, r, i fluxes of each component (bluer = more g)
COLOUR_DISC = np.array([1.05, 1.0, 0.95])
COLOUR_BULGE = np.array([0.6, 1.0, 1.3])
COLOUR_CLUMP = np.array([2.2, 1.0, 0.55])
COLOUR_ODD_RED = np.array([0.45, 1.0, 1.8])
COLOUR_NEIGHBOUR = np.array([0.5, 1.0, 1.35])

LUPTON_STRETCH = 30.0
LUPTON_Q = 6.0


@dataclass
class Scene:
    """What one galaxy image contains (pixel coordinates: x right, y down)."""

    size: int
    fwhm_px: float
    pixel_scale: float  # arcsec per pixel
    disc_scale: float
    disc_q: float
    disc_pa: float
    disc_sb: float
    arms: int
    arm_pitch: float
    arm_amp: float
    arm_phase: float
    irregular: float
    bulge_re: float
    bulge_n: float
    bulge_sb: float
    clumps: pd.DataFrame  # x, y, label, odd_kind, peak_snr, flux
    stars: np.ndarray  # (n, 3): x, y, peak (r band)
    neighbours: np.ndarray  # (n, 6): x, y, scale, q, pa, sb
    noise_peaks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (n, 3): x, y, peak (r band)


def draw_scene(rng: np.random.Generator, size: int, layout: pd.DataFrame | None, fwhm_px: float,
               seeing_arcsec: float, detectable_snr: float) -> Scene:
    """Draw a galaxy scene. ``layout`` holds real clump positions (dx, dy from the centre, label) or None."""
    s = size / 400.0
    c = size / 2.0
    if layout is not None and len(layout):
        dx, dy = layout["dx"].to_numpy() * s, layout["dy"].to_numpy() * s
        r_max = float(np.max(np.hypot(dx, dy)))
        disc_scale = float(np.clip(r_max / rng.uniform(1.2, 2.6), 14 * s, 60 * s))
    else:
        dx = dy = np.zeros(0)
        disc_scale = float(rng.uniform(14, 45) * s)
    disc_q = float(rng.uniform(0.45, 1.0))
    disc_pa = float(rng.uniform(0, np.pi))
    spiral = rng.random() < 0.6
    clumps = pd.DataFrame({"x": c + dx, "y": c + dy})
    labels = layout["label"].to_numpy(int) if layout is not None and len(layout) else np.zeros(0, int)
    clumps["label"] = labels
    # clump brightness: peak S/N per band, lognormal, so that a share of clumps is faint and hard
    snr = np.exp(rng.normal(np.log(18.0), 0.8, len(clumps)))
    clumps["peak_snr"] = np.clip(snr, 1.5, 200.0)
    r_ell = np.hypot(dx, dy) / disc_scale
    kind = np.where(labels == 2, np.where(r_ell > 2.4, "off-disc", "red"), "")
    clumps["odd_kind"] = kind
    clumps["fwhm_px"] = fwhm_px
    sigma = fwhm_px * FWHM_TO_SIGMA
    # total flux (r band) of a Gaussian source with that peak: 2 pi sigma^2 peak
    clumps["flux"] = 2 * np.pi * sigma**2 * clumps["peak_snr"].to_numpy()
    clumps["detectable"] = clumps["peak_snr"].to_numpy() >= detectable_snr

    n_stars = rng.poisson(0.9)
    stars = np.column_stack([rng.uniform(0, size, n_stars), rng.uniform(0, size, n_stars),
                             np.exp(rng.uniform(np.log(15), np.log(400), n_stars))]) if n_stars else np.zeros((0, 3))
    n_nb = rng.poisson(0.6)
    nb = []
    for _ in range(n_nb):
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.3, 0.48) * size
        nb.append([c + rad * np.cos(ang), c + rad * np.sin(ang), rng.uniform(3, 10) * s, rng.uniform(0.4, 1),
                   rng.uniform(0, np.pi), rng.uniform(6, 40)])
    return Scene(
        size=size, fwhm_px=fwhm_px, pixel_scale=seeing_arcsec / fwhm_px, disc_scale=disc_scale, disc_q=disc_q,
        disc_pa=disc_pa, disc_sb=float(rng.uniform(12, 50)), arms=2 if spiral else 0,
        arm_pitch=float(rng.uniform(0.25, 0.5)), arm_amp=float(rng.uniform(0.3, 0.7)) if spiral else 0.0,
        arm_phase=float(rng.uniform(0, 2 * np.pi)), irregular=0.0 if spiral else float(rng.uniform(0.2, 0.45)),
        bulge_re=float(rng.uniform(3, 9) * s), bulge_n=float(rng.uniform(1.5, 4.0)),
        bulge_sb=float(rng.uniform(0, 1.2)), clumps=clumps, stars=stars,
        neighbours=np.asarray(nb).reshape(-1, 6),
    )


def _elliptical_radius(xx: np.ndarray, yy: np.ndarray, x0: float, y0: float, q: float, pa: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = xx - x0, yy - y0
    cp, sp = np.cos(pa), np.sin(pa)
    u = dx * cp + dy * sp
    v = (-dx * sp + dy * cp) / q
    return np.hypot(u, v), np.arctan2(v, u)


def _add_gaussian(img: np.ndarray, x: float, y: float, sigma: float, amp: np.ndarray) -> None:
    """Add a circular Gaussian of peak ``amp[b]`` to each band ``b`` of ``img`` (3, H, W), in place."""
    h, w = img.shape[1:]
    r = int(np.ceil(4.5 * sigma)) + 1
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, w)
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    gx = np.exp(-0.5 * ((np.arange(x0, x1) + 0.5 - x) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(y0, y1) + 0.5 - y) / sigma) ** 2)
    img[:, y0:y1, x0:x1] += amp[:, None, None] * (gy[:, None] * gx[None, :])[None]


def render_bands(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The g, r, i images (3, H, W) in units of the sky noise sigma, noise included."""
    n = scene.size
    grid = np.arange(n, dtype=np.float64) + 0.5
    xx, yy = np.meshgrid(grid, grid)
    c = n / 2.0
    r, phi = _elliptical_radius(xx, yy, c, c, scene.disc_q, scene.disc_pa)
    disc = np.exp(-r / scene.disc_scale)
    if scene.arms:
        spiral = np.cos(scene.arms * (phi - np.log(r / scene.disc_scale + 0.2) / np.tan(scene.arm_pitch))
                        + scene.arm_phase)
        arm = 1.0 + scene.arm_amp * spiral * np.clip(r / scene.disc_scale, 0, 1.5)
        disc = disc * np.clip(arm, 0.1, None)
    if scene.irregular:
        field = zoom(rng.standard_normal((12, 12)), n / 12.0, order=3)[:n, :n]
        disc = disc * np.exp(scene.irregular * field)
    b_n = 2.0 * scene.bulge_n - 1.0 / 3.0
    rb, _ = _elliptical_radius(xx, yy, c, c, min(1.0, scene.disc_q + 0.3), scene.disc_pa)
    bulge = np.exp(-b_n * ((rb / scene.bulge_re) ** (1.0 / scene.bulge_n) - 1.0))
    bulge = bulge / max(bulge.max(), 1e-12)
    smooth = (scene.disc_sb * disc)[None] * COLOUR_DISC[:, None, None]
    smooth += (scene.bulge_sb * scene.disc_sb * bulge)[None] * COLOUR_BULGE[:, None, None]
    for x, y, scale, q, pa, sb in scene.neighbours:
        rn, _ = _elliptical_radius(xx, yy, x, y, q, pa)
        smooth += (sb * np.exp(-rn / scale))[None] * COLOUR_NEIGHBOUR[:, None, None]
    sigma = scene.fwhm_px * FWHM_TO_SIGMA
    img = np.empty_like(smooth)
    for b in range(3):
        img[b] = gaussian_filter(smooth[b], sigma, mode="nearest", truncate=3.0)
    for row in scene.clumps.itertuples(index=False):
        colour = COLOUR_ODD_RED if row.odd_kind == "red" else COLOUR_CLUMP
        _add_gaussian(img, row.x, row.y, sigma, row.peak_snr * colour / colour.mean())
    for x, y, peak in scene.stars:
        _add_gaussian(img, x, y, sigma, peak * np.array([0.9, 1.0, 1.05]))
    for x, y, peak in scene.noise_peaks:  # faint compact peaks on the sky (the distractor crowd clicks them)
        _add_gaussian(img, x, y, sigma, peak * np.array([1.0, 1.0, 1.0]))
    img += rng.standard_normal(img.shape)
    return img


def add_noise_peaks(scene: Scene, rng: np.random.Generator, rate: float, snr: tuple[float, float]) -> None:
    """Put Poisson(``rate``) faint compact peaks on the sky, outside 3 disc scale lengths (not on the galaxy)."""
    n = rng.poisson(rate)
    c = scene.size / 2.0
    pts = []
    for _ in range(50 * n):
        if len(pts) == n:
            break
        x, y = rng.uniform(0.05, 0.95, 2) * scene.size
        if np.hypot(x - c, y - c) > 3 * scene.disc_scale:
            pts.append([x, y, rng.uniform(*snr)])
    scene.noise_peaks = np.asarray(pts, dtype=float).reshape(-1, 3)


def scene_objects(scene: Scene) -> pd.DataFrame:
    """What a volunteer could click besides clumps: the bulge (centre), stars, companions, noise peaks.

    ``brightness`` is the peak (stars, noise peaks) or central surface brightness (bulge, companions) in units of
    the sky sigma (r band); ``size_px`` the bulge's effective radius, a companion's scale length, or the PSF FWHM.
    """
    c = scene.size / 2.0
    rows = [("bulge", c, c, scene.bulge_sb * scene.disc_sb + scene.disc_sb, scene.bulge_re)]
    rows += [("star", x, y, peak, scene.fwhm_px) for x, y, peak in scene.stars]
    rows += [("companion", x, y, sb, scale) for x, y, scale, _q, _pa, sb in scene.neighbours]
    rows += [("noise_peak", x, y, peak, scene.fwhm_px) for x, y, peak in scene.noise_peaks]
    t = pd.DataFrame(rows, columns=["kind", "x", "y", "brightness", "size_px"])
    t.insert(0, "object_id", np.arange(len(t)))
    return t


def to_rgb(bands: np.ndarray) -> np.ndarray:
    """gri (3, H, W) -> uint8 RGB (H, W, 3) with the Lupton asinh stretch (R = i, G = r, B = g)."""
    g, r, i = bands
    return make_lupton_rgb(i, r, g, minimum=-1.0, stretch=LUPTON_STRETCH, Q=LUPTON_Q)
