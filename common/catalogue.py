"""What a ``predict`` output folder holds for readers in other layers (``aggregate --detections``).

Aggregation never imports detection, so the names both sides rely on live here.
"""

from __future__ import annotations

#: the Parquet schema metadata key under which predict keeps its run settings (JSON)
META_KEY = "clumptool"
#: beside the catalogue: every galaxy predict looked at (``subject_id``), with or without detections. A galaxy
#: absent from it was never looked at, so the detector's silence there is no evidence.
GALAXIES_FILE = "galaxies.parquet"
