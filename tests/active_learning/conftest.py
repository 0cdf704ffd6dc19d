"""Fixtures for the upload tests: the loopback fake Panoptes server and the real panoptes-client.

The client runs unmodified against the fake; only its retry limits are set to 1 so that no test sleeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clumptool.testing.panoptes_env import (
    forget_sessions,
    isolate_environment,
    logged_in_fake,
    single_attempt_client,
)

PASSWORD = "s3cret-Pw-93kq"          # distinctive, so the tests can search for leaks
CLIENT_SECRET = "app-s3cret-7Hx2"


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Ledgers in a temporary folder, never in the real ~/.local/state."""
    monkeypatch.setenv("CLUMPTOOL_STATE_DIR", str(tmp_path / "clumptool-state"))
    return tmp_path / "clumptool-state"


@pytest.fixture
def panoptes_client(monkeypatch, tmp_path):
    """The real client with retries limited to one attempt; thread-locals cleared afterwards."""
    isolate_environment(monkeypatch, tmp_path / "clumptool-state")
    pc = single_attempt_client(monkeypatch)
    yield pc
    forget_sessions(pc)


@pytest.fixture
def fake(panoptes_client, monkeypatch):
    """A running fake server (user clumpbot / PASSWORD, app clumptool-app / CLIENT_SECRET, project 1234
    with workflow 5678) and the password credentials in the environment."""
    with logged_in_fake(monkeypatch, "clumpbot", PASSWORD, apps={"clumptool-app": CLIENT_SECRET}) as server:
        yield server


def make_selection(folder, n: int = 5, size: int = 24, seed: int = 0) -> pd.DataFrame:
    """n tiny distinct PNG cutouts and a selection table like select-next-batch produces."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"G{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append({"galaxy_id": f"G{i:04d}", "file": str(path), "score": round(0.9 - 0.1 * i, 3),
                     "strategy": "bald" if i % 2 == 0 else "random", "rank": i + 1, "control": int(i % 2),
                     "ra": 150.0 + i / 100, "dec": 2.0 - i / 100})
    return pd.DataFrame(rows)


@pytest.fixture
def selection(tmp_path) -> pd.DataFrame:
    return make_selection(tmp_path / "cutouts")


@pytest.fixture(name="make_selection")
def make_selection_fixture():
    """The :func:`make_selection` builder, for tests needing more than one selection."""
    return make_selection


@pytest.fixture
def fake_secrets() -> dict[str, str]:
    """The fake server's password and client secret (to search outputs for leaks)."""
    return {"password": PASSWORD, "client_secret": CLIENT_SECRET}
