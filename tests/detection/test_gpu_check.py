"""bench/gpu_check.py runs here in its tiny CPU mode: the same train + predict steps the GPU check runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu(capsys):
    import torch

    path = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and " train " in out and " predict " in out
    if not torch.cuda.is_available():
        assert "skipped (need CUDA): bf16-mixed, 16-mixed" in out
