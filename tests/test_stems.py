"""Export stems (napari_clipsam/export/stems.py): every stem a rule makes is one an export accepts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_clipsam.errors import ExportError
from napari_clipsam.export.stems import (MAX_STEM_BYTES, check_stem, export_stems, frame_stem, layer_stem, safe_stem,
                                         source_stem)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_made_stems_pass_the_export_check(text):
    for stem in (safe_stem(text), layer_stem(text), frame_stem(layer_stem(text[:150]), 7)):
        assert check_stem(stem) == stem


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9 _./]{1,12}\.(png|PNG|jpg|tif)", fullmatch=True), max_size=12))
def test_folder_stems_are_unique_ignoring_case(keys):
    keys = list(dict.fromkeys(keys))
    stems = export_stems(keys)
    assert list(stems) == keys
    assert len({s.casefold() for s in stems.values()}) == len(keys)
    for s in stems.values():
        check_stem(s)


def test_frame_stem_of_a_full_length_stem_is_exportable():
    stem = layer_stem("x" * 300)
    assert len(stem.encode()) == MAX_STEM_BYTES
    framed = {frame_stem(stem, f) for f in (3, 4)}
    assert len(framed) == 2 and all(check_stem(s).endswith(("_f003", "_f004")) for s in framed)
    assert frame_stem("a", 3) == "a_f003" and frame_stem(stem, None) == stem


@pytest.mark.parametrize("bad", ["a\\b", "a/b", "x:y", "a\x01", "q?", " lead", ".."])
def test_check_stem_refuses_what_no_file_name_holds(bad):
    with pytest.raises(ExportError, match="stem"):
        check_stem(bad)


def test_the_named_rules():
    assert frame_stem("plate", None) == "plate" and frame_stem("plate", 3) == "plate_f003"
    assert layer_stem("metal  plate\t2") == "metal_plate_2" and layer_stem("...") == "image"
    assert source_stem("layer name", "/data/scan 07.tif") == "scan_07" and source_stem("layer name", None) == "layer_name"
    assert export_stems(["sub/a.png", "sub__a.jpg"]) == {"sub/a.png": "sub__a_png", "sub__a.jpg": "sub__a_jpg"}
