"""panoptes_aggregation 5.3.1's settings of its DBSCAN / HDBSCAN point reducers (aggregation-reference §6.2).

Apart from :mod:`clumptool.aggregation.reducers` so that ``aggregate``'s options can default to them without
importing scikit-learn, which only ``--method dbscan|hdbscan`` needs (about 1 s of start-up otherwise).
"""

from __future__ import annotations

DBSCAN_DEFAULTS = {"eps": 5.0, "min_samples": 3, "metric": "euclidean", "algorithm": "auto", "leaf_size": 30,
                   "p": None}
HDBSCAN_DEFAULTS = {"min_cluster_size": 5, "min_samples": 3, "metric": "euclidean", "algorithm": "auto",
                    "leaf_size": 40, "cluster_selection_method": "eom", "allow_single_cluster": False}
