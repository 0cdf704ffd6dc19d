"""Zooniverse subject metadata keys: the one place that knows the hidden/private prefixes.

Zooniverse hides metadata keys starting with ``#`` or ``!`` from volunteers. clumptool reads a key by its plain name, so
``#fwhmImagePix``, ``!fwhmImagePix`` and ``fwhmImagePix`` are one field, and writes the prefix only when it
uploads (``active_learning.manifest``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from clumptool.common.errors import ClumptoolError
from clumptool.common.errors import where as _where

HIDDEN_PREFIXES = ("#", "!")


def metadata_key(name: str) -> str:
    """``'#fwhmImagePix'`` -> ``'fwhmImagePix'``: the plain name of a metadata key (a bare ``'#'`` stays)."""
    return name.lstrip("".join(HIDDEN_PREFIXES)) or name


def _folded(name: object) -> str:
    return metadata_key(str(name)).lower().replace(" ", "")


def find_metadata_column(columns: Iterable[object], key: str) -> object | None:
    """The column of ``columns`` that holds metadata ``key`` (prefixes, case and spaces ignored), or None.

    An exact plain-name match wins over a case/space-insensitive one (``'ra, dec'`` finds ``'RA, Dec'``).
    """
    columns = list(columns)
    plain = metadata_key(key)
    for c in columns:
        if metadata_key(str(c)) == plain:
            return c
    want = _folded(key)
    return next((c for c in columns if _folded(c) == want), None)


def metadata_value(meta: Mapping[str, object], key: str, default: object = None) -> object:
    """``meta[key]`` under any prefix (``#key``, ``!key`` or ``key``; the hidden one first), else ``default``."""
    for name in (*(p + metadata_key(key) for p in HIDDEN_PREFIXES), metadata_key(key)):
        if name in meta and meta[name] is not None:
            return meta[name]
    return default


def plain_metadata(meta: Mapping[str, object]) -> dict[str, object]:
    """``meta`` with every key by its plain name (:func:`metadata_key`)."""
    return {metadata_key(k): v for k, v in meta.items()}


def parse_metadata(text: object, *, where: object, row: object = None, field: str = "metadata") -> dict:
    """One ``metadata`` JSON cell -> a dict with plain key names; blank -> ``{}``.

    Broken JSON, or JSON that is not an object, is an error naming the file, row and field.
    """
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClumptoolError(f"{_where(where, row, field)}: broken JSON ({exc.msg} at char {exc.pos}); fix the "
                             "cell or empty it") from exc
    if not isinstance(meta, dict):
        raise ClumptoolError(f"{_where(where, row, field)}: expected a JSON object ({{\"key\": value, ...}})")
    return plain_metadata(meta)


# How an uploaded cutout maps to the original image (written by active_learning.manifest, read by
# aggregation.frames): original pixel = offset + uploaded pixel / scale, per axis. ``cutout_scale_y`` is
# written only when it differs from ``cutout_scale``; offsets only for a crop. Missing keys mean identity.
CUTOUT_SCALE = "cutout_scale"
CUTOUT_SCALE_Y = "cutout_scale_y"
CUTOUT_X0 = "cutout_x0"
CUTOUT_Y0 = "cutout_y0"
CUTOUT_KEYS = (CUTOUT_SCALE, CUTOUT_SCALE_Y, CUTOUT_X0, CUTOUT_Y0)


def hidden_key(name: str) -> str:
    """``'cutout_scale'`` -> ``'#cutout_scale'``: the name under which clumptool uploads a hidden key."""
    return HIDDEN_PREFIXES[0] + metadata_key(name)
