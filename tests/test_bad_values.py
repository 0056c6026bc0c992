"""Bad values never give a silently wrong result (issue 9 item 5 and "state that cannot go wrong"): contrast
limits, huge floats, fractional labels, prompt shapes, NaN in provenance, spreadsheet formulas in review notes,
and results refined by an engine other than the one that made them."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from napari_clipsam.errors import EngineMismatchError, InvalidInputError
from napari_clipsam.io.images import normalise_image
from napari_clipsam.testing import tiny_engine

RNG = np.random.default_rng(5)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is faster, no stalls
IMAGE = (RNG.random((48, 56, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def eng():
    return tiny_engine(seed=0)


@pytest.fixture(scope="module")
def result(eng):
    return eng.segment(IMAGE, "plate")


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("limits", [(1, 0), (math.nan, 1), (0, math.nan), (0, math.inf), (-math.inf, 0), (1,),
                                    (0, 1, 2), "ab", (None, 1)])
def test_invalid_contrast_limits_are_refused_not_a_black_image(limits):
    for image in (RNG.random((16, 16)).astype(np.float32), (RNG.random((16, 16)) * 4000).astype(np.uint16),
                  IMAGE):
        with pytest.raises(InvalidInputError, match="contrast_limits must be two finite numbers"):
            normalise_image(image, limits)


def test_valid_contrast_limits_map_linearly_and_equal_limits_act_as_constant():
    image = np.linspace(0, 100, 16 * 16, dtype=np.float32).reshape(16, 16)
    rgb, _ = normalise_image(image, (0, 100))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and rgb[8, 0, 0] == round(128 / 255 * 100 * 2.55)
    flat, _ = normalise_image(image, (50, 50))  # napari gives equal limits for a constant layer
    assert set(np.unique(flat[image < 50])) == {0}


@pytest.mark.parametrize("scale,dtype", [(1e300, np.float64), (1.7e308, np.float64), (3.4e38, np.float32),
                                         (6.5e4, np.float16), (1e4000, np.longdouble)])
def test_floats_at_the_edge_of_their_range_rescale_without_overflow(scale, dtype):
    if dtype is np.longdouble and np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("long double is float64 on this platform")
    ramp = np.linspace(-1, 1, 16 * 16).reshape(16, 16).astype(dtype) * dtype(scale) if dtype is not np.longdouble \
        else np.linspace(-1, 1, 16 * 16).reshape(16, 16).astype(np.longdouble) * np.longdouble(10) ** 4000
    ramp[0, 0], ramp[0, 1], ramp[0, 2] = np.inf, -np.inf, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered" RuntimeWarning
        rgb, valid = normalise_image(ramp)
    g = rgb[..., 0]
    assert g[0, 0] == 255 and g[0, 1] == 0 and g[0, 2] == 0 and not valid[0, 2] and valid.sum() == 16 * 16 - 1
    row = g[8]  # a monotone ramp stays monotone, and spans the range (not all white)
    assert (np.diff(g.ravel()[3:].astype(int)) >= 0).all() and row.min() < row.max()
    assert 0 < np.mean(g) < 255


# ------------------------------------------------------------------------------------------ refine arguments
BAD_PROMPTS = [
    (dict(points=[[10, 10]], point_labels=[0.5]), "point_labels must be 1 \\(positive\\) or 0"),
    (dict(points=[[10, 10], [20, 20]], point_labels=[1, 0.5]), "point_labels must be 1"),
    (dict(points=[[10, 10]], point_labels=[2]), "point_labels must be 1"),
    (dict(points=[[10, 10]], point_labels=[[1]]), "point_labels must be a list"),
    (dict(points=[[10, 10]], point_labels=[1, 1]), "point_labels has 2 entries but there are 1 points"),
    (dict(points=[10, 10]), "points must have shape \\(N, 2\\).*wrap a single one"),
    (dict(points=[[10, 10, 3]]), "points must have shape \\(N, 2\\)"),
    (dict(points=[[[10, 10]]]), "points must have shape \\(N, 2\\)"),
    (dict(points=[["a", "b"]]), "points must hold real numbers"),
    (dict(points=[[1 + 2j, 3]]), "points must hold real numbers"),
    (dict(points=[[1, 2], [3]]), "points must be a rectangular array"),
    (dict(points=[[math.nan, 3]]), "points must be finite numbers"),
    (dict(points=[[1e40, 3]]), "lie outside the 48×56 image"),
    (dict(boxes=[[0, 0, 10]]), "boxes must have shape \\(N, 4\\)"),
    (dict(boxes=[0, 0, 10, 10]), "boxes must have shape \\(N, 4\\).*wrap a single one"),
    (dict(boxes=[[10, 10, 5, 20]]), "every box \\(boxes argument\\) must satisfy row0 < row1"),
    (dict(boxes=[[0, 0, math.inf, 5]]), "boxes must be finite numbers"),
    (dict(boxes="0,0,5,5"), "boxes must hold real numbers"),
]


@pytest.mark.parametrize("kwargs,message", BAD_PROMPTS, ids=[str(k) for k, _ in BAD_PROMPTS])
def test_refine_refuses_bad_prompts_naming_the_argument(eng, result, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        eng.refine(result, **kwargs)


def test_refine_accepts_the_usual_spellings(eng, result):
    a = eng.refine(result, points=np.array([[10, 12]], np.int64), point_labels=np.array([True]))
    b = eng.refine(result, points=[(10.0, 12.0)], point_labels=[1.0])
    c = eng.refine(result, points=[], point_labels=[], boxes=[])  # an empty layer: no prompts
    np.testing.assert_array_equal(a.final_map, b.final_map)
    assert a.point_labels.tolist() == [1] and c.num_instances == 0


@pytest.mark.parametrize("batch_size", [2.5, 0, -1, True, "2"])
def test_segment_many_refuses_bad_batch_sizes(eng, batch_size):
    with pytest.raises(InvalidInputError, match="batch_size must be a whole number"):
        eng.segment_many([IMAGE], "plate", batch_size=batch_size)


def test_segment_many_refuses_a_single_image_for_a_list(eng):
    with pytest.raises(InvalidInputError, match="images must be a list of images"):
        eng.segment_many(IMAGE, "plate")


@pytest.mark.parametrize("name", ["pl\udcfate", "\ud800", 3, None, "  _ "])
def test_object_names_that_are_not_text_are_refused(eng, name):
    with pytest.raises(InvalidInputError, match="object_name"):
        eng.segment(IMAGE, name)


# ------------------------------------------------------------------------------------------ engine identity
def test_refine_refuses_a_result_made_by_another_sam_or_re_embeds_with_the_image(result):
    other = tiny_engine(seed=1)  # another SAM (other weights)
    assert other.sam.model_id != result.sam_id
    calls = other.cache_info().sam_decoder.misses
    with pytest.raises(EngineMismatchError, match="made by another SAM.*Pass image="):
        other.refine(result, points=[[20, 20]])
    assert other.cache_info().sam_decoder.misses == calls  # nothing was decoded on the foreign embedding
    encoded = other.cache_info().sam_embeddings.misses
    redone = other.refine(result, points=[[20, 20]], image=IMAGE)
    assert other.cache_info().sam_embeddings.misses == encoded + 1 and redone.sam_id == other.sam.model_id
    direct = other.refine(result, points=[[20, 20]])  # now on the embedding it cached: no image needed
    np.testing.assert_array_equal(redone.final_map, direct.final_map)  # same SAM masks
    assert other.cache_info().sam_embeddings.misses == encoded + 1
    with pytest.raises(InvalidInputError, match="not the image this result was made from"):
        tiny_engine(seed=1).refine(result, points=[[20, 20]], image=IMAGE[::-1])
    # the rough map's provenance stays the one the result was made with; SAM's is the refining engine's
    assert redone.provenance["clip_weights"] == result.provenance["clip_weights"]
    assert redone.provenance["sam_weights"] == other.identity["sam_weights"] != result.provenance["sam_weights"]


def test_engines_with_the_same_sam_give_the_same_refine_and_a_runner_refuses_a_foreign_embedding(eng, result):
    twin = tiny_engine(seed=0)  # same weights: same SAM stamp
    assert twin.sam.model_id == eng.sam.model_id
    a = twin.refine(result, points=[[20, 20]], image=IMAGE)  # the twin has no embedding of IMAGE yet
    np.testing.assert_array_equal(a.final_map, eng.refine(result, points=[[20, 20]]).final_map)
    stranger = tiny_engine(seed=1)
    with pytest.raises(EngineMismatchError):  # the SAM runner itself refuses a foreign embedding
        stranger.sam.decode(eng.sam_embedding(result), boxes=np.array([[0, 0, 10, 10]], np.float32))


def test_random_weights_get_an_engine_unique_stamp():
    from napari_clipsam.engine.identity import sam_identity

    ident = {"sam_model": "vit_b", "sam_weights": "random"}
    assert sam_identity(ident, "cpu", "float32") != sam_identity(ident, "cpu", "float32")
    ident = {"sam_model": "vit_b", "sam_weights": "sha256:ab"}
    assert sam_identity(ident, "cpu", "float32") == sam_identity(ident, "cpu", "float32") \
        != sam_identity(ident, "cpu", "bfloat16")


# ------------------------------------------------------------------------------------------ files people read
def test_provenance_with_nan_and_inf_is_written_as_strict_json(tmp_path):
    from napari_clipsam.export import PROVENANCE_DIR, export_pseudo_labels

    inst = np.zeros((8, 8), np.int32)
    inst[1:4, 1:4] = 1
    prov = {"score": math.nan, "peak": np.float32(np.inf), "low": -math.inf, "ok": 0.5, "arr": np.array([1.0, np.nan])}
    export_pseudo_labels(tmp_path, "a", inst, formats=["mvtec"], provenance=prov)
    text = (tmp_path / PROVENANCE_DIR / "a.json").read_text()

    def refuse(token):
        raise AssertionError(f"non-JSON token {token}")

    engine = json.loads(text, parse_constant=refuse)["exports"][-1]["engine"]
    assert engine["score"] is None and engine["peak"] is None and engine["low"] is None and engine["ok"] == 0.5
    assert engine["arr"] == [1.0, None]


@pytest.mark.parametrize("note", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_review_notes_that_spreadsheets_would_run_are_escaped(tmp_path, note):
    from napari_clipsam.review.manifest import Entry, Manifest, Verdict, read_csv

    m = Manifest(tmp_path, tmp_path)
    m.set("=a.png", Entry(Verdict.REJECTED, "2026-01-01T00:00:00+00:00", "=a", note=note))
    m.save()
    row = read_csv(tmp_path / "clipsam_manifest.csv")[0]
    assert row["note"] == "'" + note and row["image"] == "'=a.png" and row["stem"] == "'=a"
    assert json.loads((tmp_path / "clipsam_manifest.json").read_text())["images"]["=a.png"]["note"] == note
    m.set("b.png", Entry(Verdict.ACCEPTED, "2026-01-01T00:00:00+00:00", "b", note="fine - 2 scratches"))
    m.save()
    assert read_csv(tmp_path / "clipsam_manifest.csv")[1]["note"] == "fine - 2 scratches"
