"""Sky coordinates of image pixels: a tangent-plane WCS centred on the galaxy.

Clump Scout subjects are cutouts centred on the galaxy (ra, dec) with north up and east left, at a pixel
scale of ``arcsecPerSide / width``. One WCS serves the simulator (truth ra/dec) and ``predict`` (catalogue
ra/dec), so both agree to the last digit.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS


def subject_wcs(ra_deg: float, dec_deg: float, pixel_scale_arcsec: float, width: float, height: float) -> WCS:
    """TAN WCS with (ra, dec) at the image centre, north up, east left, square pixels.

    Pixel coordinates follow the image convention used everywhere in clumptool: x right, y *down*, origin at
    the top-left corner of the first pixel.
    """
    if not pixel_scale_arcsec > 0:
        raise ValueError(f"pixel scale must be positive, got {pixel_scale_arcsec}")
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra_deg), float(dec_deg)]
    # FITS pixel (1-based, y up) of the image centre
    w.wcs.crpix = [width / 2.0 + 0.5, height / 2.0 + 0.5]
    scale = pixel_scale_arcsec / 3600.0
    w.wcs.cdelt = [-scale, scale]
    return w


def pixel_to_sky(x: np.ndarray, y: np.ndarray, ra_deg: float, dec_deg: float, pixel_scale_arcsec: float,
                 width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Image pixels (x right, y down, 0-based corner origin) -> (ra, dec) in degrees."""
    w = subject_wcs(ra_deg, dec_deg, pixel_scale_arcsec, width, height)
    fx = np.asarray(x, dtype=float) + 0.5  # 0-based pixel-edge -> FITS 1-based pixel-centre convention
    fy = height - np.asarray(y, dtype=float) + 0.5  # flip: image y runs down, FITS y runs up
    ra, dec = w.all_pix2world(fx, fy, 1)
    return np.asarray(ra), np.asarray(dec)


def sky_to_pixel(ra: np.ndarray, dec: np.ndarray, ra_deg: float, dec_deg: float, pixel_scale_arcsec: float,
                 width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_to_sky`."""
    w = subject_wcs(ra_deg, dec_deg, pixel_scale_arcsec, width, height)
    fx, fy = w.all_world2pix(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float), 1)
    return np.asarray(fx) - 0.5, height - (np.asarray(fy) - 0.5)
