"""Fixtures for the aggregation tests; the builders live in export_builders.py (importable by name)."""

from __future__ import annotations

import pytest
from export_builders import ExportBuilder


@pytest.fixture
def export_builder():
    return ExportBuilder()
