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
def image():
    """A 96-px synthetic machined part with a crack (RGB uint8), the image the dock's tests segment (a module may
    define its own ``image``)."""
    from napari_clipsam.data.synthetic import synthetic_image

    return synthetic_image("part", "crack", size=96, seed=1)[0]


@pytest.fixture
def make_widget(make_napari_viewer, shared_engine, monkeypatch):
    """``viewer, widget = make_widget(engine=..., viewer=..., **options)``: a ClipSAM dock opened as napari opens a
    plugin's (on a new viewer unless one is given; ``options`` go to :func:`dock_helpers.open_dock`), with napari
    checking that the dock sets napari state from the GUI thread only. napari tests only (it needs napari's
    ``make_napari_viewer``)."""
    from dock_helpers import open_dock

    monkeypatch.setenv("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")

    def make(engine=shared_engine, viewer=None, **options):
        viewer = viewer or make_napari_viewer()
        return viewer, open_dock(viewer, engine, **options)

    return make


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
