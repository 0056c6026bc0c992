"""Property-based tests (hypothesis) of the engine's input contract and of refine's invariants.

Input contract: any array (random dtype, shape, channel layout, NaN/±inf, huge values) and any contrast limits
give either a valid result or a ValueError saying what is wrong, never another exception or a numpy overflow
warning. Refine: random prompt edits always give well-formed outputs (shapes, dtypes, instances inside the
mask, contiguous ids, final map in [0, 1]) and the same output again for the same prompts, whatever was decoded
before. One tiny engine per module; examples are few and small (:data:`EXAMPLES`); hypothesis runs derandomized,
so a run is repeatable and a failure is shown as its smallest example.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_clipsam import ClipSAMResult
from napari_clipsam.testing import tiny_engine

EXAMPLES = int(os.environ.get("CLIPSAM_PROPERTY_EXAMPLES", "60"))
"""Examples per property (60 take ~3 s on a loaded 2-core machine); raise it for a deeper search,
e.g. ``CLIPSAM_PROPERTY_EXAMPLES=500 pytest tests/test_properties.py``."""
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16, np.float32,
          np.float64, np.longdouble, np.bool_, np.complex64, np.str_, np.object_]
IMAGE_SHAPE = (40, 48)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is faster, no stalls


@pytest.fixture(scope="module")
def eng():
    return tiny_engine(seed=0)


@pytest.fixture(scope="module")
def base(eng):
    rng = np.random.default_rng(3)
    return eng.segment((rng.random((*IMAGE_SHAPE, 3)) * 255).astype(np.uint8), "plate")


def well_formed(r: ClipSAMResult, shape: tuple[int, int]) -> None:
    """The invariants every result satisfies."""
    for m in (r.rough_map, r.final_map):
        assert m.shape == shape and m.dtype == np.float32 and np.isfinite(m).all()
        assert m.min() >= 0.0 and m.max() <= 1.0
    assert r.mask.shape == shape and r.mask.dtype == bool
    assert r.instances.shape == shape and r.instances.dtype == np.int32
    assert ((r.instances > 0) <= r.mask).all()  # instances ⊆ mask
    ids = np.unique(r.instances[r.instances > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # ids contiguous from 1
    assert r.points.shape == (len(r.point_labels), 2) and r.points.dtype == np.float32
    assert r.point_labels.dtype == np.int32 and set(r.point_labels.tolist()) <= {0, 1}
    assert r.boxes.ndim == 2 and r.boxes.shape[1] == 4 and r.boxes.dtype == np.float32
    assert 0.0 <= r.score <= 1.0


# ------------------------------------------------------------------------------------------ input contract
sides = st.integers(8, 24)
shapes = st.one_of(
    st.tuples(sides, sides),                                          # H×W
    st.tuples(sides, sides, st.sampled_from([1, 2, 3, 4])),           # H×W×C
    st.tuples(sides, sides, st.sampled_from([0, 5])),                 # unusable channel counts
    st.tuples(st.integers(0, 9), st.integers(0, 9)),                  # too small or empty
    st.tuples(st.sampled_from([1, 3, 4]), st.integers(8, 20), st.integers(8, 20)),  # channel-first
    st.tuples(st.integers(1, 3), st.integers(8, 14), st.integers(8, 14), st.sampled_from([1, 3])),  # stacks
    st.tuples(st.integers(0, 20)),                                    # 1-D
    st.just(()),                                                      # a scalar
)
usable_dtypes = st.sampled_from(DTYPES[:11])


@st.composite
def images(draw):
    dtype = np.dtype(draw(st.one_of(usable_dtypes, usable_dtypes, st.sampled_from(DTYPES))))
    shape = draw(shapes)
    if dtype.kind in "USO":
        return np.full(shape, "x", dtype=dtype)
    if dtype.kind == "c":
        return np.full(shape, 1 + 2j, dtype=dtype)
    elements = None
    if dtype.kind == "f":
        pick = draw(st.sampled_from(["any", "unit", "huge"]))
        width = min(dtype.itemsize * 8, 64)
        elements = {"any": st.floats(allow_nan=True, allow_infinity=True, width=width),
                    "unit": st.floats(0, 1, width=width),
                    "huge": st.sampled_from([np.finfo(np.float64).max if width == 64 else float(np.finfo(dtype).max),
                                             -1e300 if width == 64 else -float(np.finfo(dtype).max), 0.0])}[pick]
    a = draw(hnp.arrays(dtype if dtype != np.longdouble else np.float64, shape, elements=elements))
    if dtype == np.longdouble:
        a = a.astype(np.longdouble) * draw(st.sampled_from([np.longdouble(1), np.longdouble(10) ** 400]))
    return a


limits = st.one_of(st.none(), st.tuples(st.floats(allow_nan=True, allow_infinity=True),
                                        st.floats(allow_nan=True, allow_infinity=True)))


@SETTINGS
@given(image=images(), contrast_limits=limits)
def test_any_array_gives_a_result_or_a_clear_value_error(eng, image, contrast_limits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent overflow / invalid-value arithmetic
        try:
            r = eng.segment(image, "plate", contrast_limits=contrast_limits)
        except ValueError as err:
            msg = str(err)
            assert msg and ("expected" in msg or "must" in msg or "nothing to segment" in msg), msg
            return
    well_formed(r, image.shape[:2])


@settings(SETTINGS, max_examples=max(5, EXAMPLES // 3))
@given(stack=hnp.arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(16), st.just(16))),
       batch_size=st.one_of(st.integers(-2, 4), st.floats(0, 4), st.none()))
def test_segment_many_returns_one_result_per_frame_or_refuses_the_batch_size(eng, stack, batch_size):
    try:
        out = eng.segment_many(list(stack), "plate", batch_size=batch_size)
    except ValueError as err:
        assert "batch_size" in str(err)
        assert not (batch_size is None or isinstance(batch_size, int) and batch_size >= 1)
        return
    assert len(out) == len(stack)
    for r in out:
        well_formed(r, (16, 16))


# ------------------------------------------------------------------------------------------ refine invariants
H, W = IMAGE_SHAPE
rows = st.floats(-0.5, H - 0.5, allow_nan=False, width=32)
cols = st.floats(-0.5, W - 0.5, allow_nan=False, width=32)


@st.composite
def boxes(draw):
    r0, r1 = sorted(draw(st.lists(st.integers(0, H), min_size=2, max_size=2, unique=True)))
    c0, c1 = sorted(draw(st.lists(st.integers(0, W), min_size=2, max_size=2, unique=True)))
    return [r0, c0, r1, c1]


@st.composite
def edit_chains(draw):
    """A start set of prompts, then 1–3 edits as a user makes them (flip a label, move, delete or add a point,
    add or delete a box): the list of prompt sets after each step."""
    n = draw(st.integers(0, 4))
    state = {"points": [list(p) for p in draw(st.lists(st.tuples(rows, cols), min_size=n, max_size=n))],
             "point_labels": draw(st.lists(st.sampled_from([0, 1, True, 1.0]), min_size=n, max_size=n)),
             "boxes": draw(st.lists(boxes(), max_size=2))}
    chain = [state]
    for _ in range(draw(st.integers(1, 3))):
        state = {k: [list(v) if isinstance(v, list) else v for v in vals] for k, vals in state.items()}
        ops = ["add point", "add box"] + (["flip", "move", "delete point"] if state["points"] else []) \
            + (["delete box"] if state["boxes"] else [])
        op = draw(st.sampled_from(ops))
        if op in ("flip", "move", "delete point"):
            i = draw(st.integers(0, len(state["points"]) - 1))
            if op == "flip":
                state["point_labels"][i] = 1 - int(state["point_labels"][i])
            elif op == "move":
                state["points"][i] = [draw(rows), draw(cols)]
            else:
                del state["points"][i], state["point_labels"][i]
        elif op == "add point":
            state["points"].append([draw(rows), draw(cols)])
            state["point_labels"].append(draw(st.sampled_from([0, 1])))
        elif op == "add box":
            state["boxes"].append(draw(boxes()))
        else:
            del state["boxes"][draw(st.integers(0, len(state["boxes"]) - 1))]
        chain.append(state)
    return chain


@SETTINGS
@given(chain=edit_chains())
def test_random_prompt_edits_keep_every_invariant_and_are_deterministic(eng, base, chain):
    result = base
    for prompts in chain:  # each edit refines the previous result, as in the widget
        result = eng.refine(result, **prompts)
        well_formed(result, IMAGE_SHAPE)
        n_pos = sum(1 for lb in prompts["point_labels"] if lb == 1)
        assert result.num_instances <= len(prompts["boxes"]) + n_pos
        assert len(result.points) == len(prompts["points"]) and len(result.boxes) == len(prompts["boxes"])
    last = chain[-1]
    again = eng.refine(base, **last)  # the same prompts once more: same output
    np.testing.assert_array_equal(again.final_map, result.final_map)
    np.testing.assert_array_equal(again.instances, result.instances)
    eng.clear_caches("decoded")  # nothing decoded before
    fresh = eng.refine(base, **last)
    np.testing.assert_array_equal(fresh.final_map, result.final_map)  # the decoder memo never changes a result
