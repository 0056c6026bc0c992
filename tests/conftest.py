"""Shared fixtures: no downloads, a private cache folder, tiny real-architecture models."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own weights/embedding cache folder; nothing is written to the user's cache."""
    monkeypatch.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """The widget remembers its settings in a private folder per test (never the user's)."""
    monkeypatch.setenv("NAPARI_CLIPSAM_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def shared_engine():
    """One tiny engine for a whole test module (widget tests inject it instead of loading weights)."""
    from napari_clipsam.testing import tiny_engine

    return tiny_engine(seed=0)


@pytest.fixture
def engine():
    from napari_clipsam.testing import tiny_engine

    return tiny_engine(seed=0)


@pytest.fixture
def umci_engine():
    from napari_clipsam.testing import tiny_engine

    return tiny_engine(seed=0, umci=True)


@pytest.fixture
def rgb():
    return (np.random.default_rng(0).random((90, 110, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread, and OpenMP threads competing with other work on 2 cores stall
    (training took 54 s instead of 5 s that way): modules that train use it through ``pytestmark``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_download_retries(monkeypatch):
    """A failing download fails at once (pooch would wait 1 s, 2 s between retries); tests of retries set it."""
    from napari_clipsam.weights import download

    monkeypatch.setattr(download, "RETRIES", 0)
