"""One default config: presets, the CLI, the widget's settings and the engine all start from ClipSAMConfig(); the
per-call and recorded settings come from the fields' metadata."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from napari_clipsam.config import (DEFAULT_PRESET, PER_CALL_FIELDS, PRESET_CHANGES, PRESETS, RECORDED_FIELDS,
                                   ClipSAMConfig)
from napari_clipsam.errors import ClipSAMUserError, ConfigError

from napari_clipsam.config_checks import PRECISIONS  # noqa: E402

FIELDS = {f.name: f for f in dataclasses.fields(ClipSAMConfig)}


def _changed(value, name=""):
    """Another valid value of a field's type (the field's checks accept it for every per-call field)."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 2
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, tuple):
        return value[:1]
    if value == "auto" and name in ("tiling", "sam_crops"):  # tiling: "auto", "off" or a tile side
        return "off"
    if name == "mutual_window_mode":
        return "only" if value != "only" else "max"
    if name == "mutual_image_score":
        return "mutual" if value != "mutual" else "fused"
    if isinstance(value, str) and value in PRECISIONS:  # a precision choice (e.g. mutual_precision)
        return next(p for p in PRECISIONS if p != value)
    raise AssertionError(f"no changed value for {value!r}")


def test_presets_are_the_default_with_their_changes():
    assert ClipSAMConfig.preset(DEFAULT_PRESET) == ClipSAMConfig() == ClipSAMConfig.preset()
    for name in PRESETS:
        assert ClipSAMConfig.preset(name) == ClipSAMConfig().replace(**PRESET_CHANGES[name])
    accurate = ClipSAMConfig.preset("accurate")
    assert (accurate.image_size, accurate.sam_model) == (518, "vit_h")  # the method document's
    assert ClipSAMConfig.preset("accurate", alpha=0.25).alpha == 0.25
    with pytest.raises(ConfigError, match="Unknown preset 'fast'"):
        ClipSAMConfig.preset("fast")


def test_cli_and_widget_start_from_the_default():
    from napari_clipsam.cli.common import add_engine_options, engine_config
    from napari_clipsam.widget.settings import WidgetSettings

    parser = argparse.ArgumentParser()
    add_engine_options(parser)
    assert engine_config(parser.parse_args([])) == ClipSAMConfig()
    settings = WidgetSettings()
    assert settings.preset == DEFAULT_PRESET
    default = ClipSAMConfig()
    assert (settings.prompt_threshold, settings.mask_threshold, settings.alpha) == (
        default.prompt_threshold, default.mask_threshold, default.alpha)


def test_roles_come_from_field_metadata():
    assert set(PER_CALL_FIELDS) == {n for n, f in FIELDS.items() if f.metadata.get("per_call")}
    assert tuple(ClipSAMConfig().thresholds()) == RECORDED_FIELDS
    assert set(RECORDED_FIELDS) == {n for n, f in FIELDS.items() if f.metadata.get("recorded")}
    # what makes an engine (models, sizes, device, caches) never changes per call
    assert not {"image_size", "feature_layers", "clip_model", "sam_model", "device", "dtype", "backend",
                "cache_bytes", "normal_states", "templates"} & set(PER_CALL_FIELDS)


def test_every_per_call_field_changes_per_call(engine):
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for name in PER_CALL_FIELDS:
        new = _changed(getattr(engine.config, name), name)
        with engine.using(**{name: new}):
            assert getattr(engine.config, name) == new, name
        assert getattr(engine.config, name) != new, name  # back to the engine's own
        result = engine.segment(rgb, "bottle", settings={name: new})
        if name in RECORDED_FIELDS:
            assert result.provenance["thresholds"][name] == (list(new) if isinstance(new, tuple) else new), name


def test_every_other_field_is_refused_per_call(engine):
    rgb = np.zeros((32, 32, 3), np.uint8)
    for name in set(FIELDS) - set(PER_CALL_FIELDS):
        value = getattr(engine.config, name)
        with pytest.raises(ClipSAMUserError, match=rf"\['{name}'\] cannot change per call.*Build a new engine"):
            with engine.using(**{name: value}):
                pass
        with pytest.raises(ClipSAMUserError, match=rf"\['{name}'\] cannot change per call"):
            engine.segment(rgb, "bottle", settings={name: value})
