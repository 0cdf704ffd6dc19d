"""Fixtures for the detection tests; the builders live in tiny_projects.py (importable by name)."""

from __future__ import annotations

import pytest
from tiny_projects import make_tiny_project


@pytest.fixture
def tiny_project(tmp_path):
    return make_tiny_project(tmp_path)
