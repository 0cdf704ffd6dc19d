"""Ported fixtures of panoptes_aggregation's point reducers (reducer_tests/test_point_reducer_*.py).

Data and expected values follow zooniverse/aggregation-for-caesar's published tests: two Gaussian clusters
drawn with numpy seed 5000, a `None`-padded second tool, absolute tolerances 2 (DBSCAN) and 2.5 (HDBSCAN).
"""

import numpy as np
import pytest

from clumptool.aggregation.reducers import point_reducer_dbscan, point_reducer_hdbscan

c0_cov = np.array([[3, 0.5], [0.5, 4]])
c1_cov = np.array([[7, -0.5], [-0.5, 5]])
c0_loc, c1_loc = np.array([12, 15]), np.array([20, 25])
c0_count, c1_count = 15, 8


@pytest.fixture
def xy():
    np.random.seed(5000)
    return np.vstack([
        np.random.multivariate_normal(c0_loc, c0_cov, size=c0_count),
        np.random.multivariate_normal(c1_loc, c1_cov, size=c1_count),
    ])


def _same_partition(labels, expected):
    mapping = {}
    for a, b in zip(labels, expected, strict=True):
        assert mapping.setdefault(a, b) == b
    return True


def test_point_reducer_dbscan_fixture(xy):
    out = point_reducer_dbscan([tuple(p) for p in xy], eps=5, min_samples=3)
    assert out["cluster_labels"] == [0] * c0_count + [1] * c1_count
    assert out["clusters_count"] == [c0_count, c1_count]
    np.testing.assert_allclose(out["clusters_x"], [c0_loc[0], c1_loc[0]], atol=2)
    np.testing.assert_allclose(out["clusters_y"], [c0_loc[1], c1_loc[1]], atol=2)
    np.testing.assert_allclose(out["clusters_var_x"], [c0_cov[0, 0], c1_cov[0, 0]], atol=2)
    np.testing.assert_allclose(out["clusters_var_y"], [c0_cov[1, 1], c1_cov[1, 1]], atol=2)
    np.testing.assert_allclose(out["clusters_var_x_y"], [c0_cov[0, 1], c1_cov[0, 1]], atol=2)
    np.testing.assert_allclose(out["points_x"], xy[:, 0])


def test_point_reducer_dbscan_drops_none_and_single_point_noise():
    out = point_reducer_dbscan([(3, 4), (None, None), (None, None)], eps=5, min_samples=3)
    assert out["points_x"] == [3] and out["points_y"] == [4] and out["cluster_labels"] == [-1]
    one = point_reducer_dbscan([(3, 4)], eps=5, min_samples=1)
    assert one["clusters_count"] == [1] and one["clusters_var_x"] == [None]


def test_point_reducer_hdbscan_fixture(xy):
    out = point_reducer_hdbscan([tuple(p) for p in xy], min_cluster_size=5, min_samples=3)
    assert _same_partition(out["cluster_labels"], [1] * c0_count + [0] * c1_count)
    order = np.argsort(out["clusters_count"])  # fixture lists the 8-point cluster first
    assert [out["clusters_count"][i] for i in order] == [c1_count, c0_count]
    np.testing.assert_allclose(np.array(out["clusters_x"])[order], [c1_loc[0], c0_loc[0]], atol=2.5)
    np.testing.assert_allclose(np.array(out["clusters_y"])[order], [c1_loc[1], c0_loc[1]], atol=2.5)
    np.testing.assert_allclose(np.array(out["clusters_var_x"])[order], [c1_cov[0, 0], c0_cov[0, 0]], atol=2.5)
    np.testing.assert_allclose(np.array(out["clusters_var_y"])[order], [c1_cov[1, 1], c0_cov[1, 1]], atol=2.5)
    assert all(0 < p <= 1 for p in out["cluster_probabilities"])
    noise = point_reducer_hdbscan([(3, 4), (None, None), (None, None)], min_cluster_size=5, min_samples=3)
    assert noise["cluster_labels"] == [-1] and noise["cluster_probabilities"] == [0.0]


def test_shape_reducer_point_fixture_two_users_per_place():
    """test_shape_reducer_point: points at (0,0) and (100,100) from several users; eps=5, min_samples=2."""
    pts = [(0, 0), (100, 100), (0, 0), (100, 100)]
    out = point_reducer_dbscan(pts, eps=5, min_samples=2)
    assert sorted(out["clusters_x"]) == [0.0, 100.0] and out["clusters_count"] == [2, 2]
    single = point_reducer_dbscan([(20, 20)], eps=5, min_samples=2)
    assert single["cluster_labels"] == [-1]
