"""Test-suite hooks: a test marked `cuda` runs only where a CUDA device is present (`pytest -m cuda`
selects every one of them; without a GPU they are reported as skipped)."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
