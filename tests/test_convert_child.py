"""The one-time OpenVINO conversion in a child process (engine/backends/convert_child.py)."""
from __future__ import annotations

import glob
import logging
import os
import tempfile

import numpy as np
import pytest
import torch

from napari_clipsam.engine.backends.openvino_runtime import openvino_available

pytestmark = pytest.mark.skipif(not openvino_available(), reason="needs openvino")


def scratch_left() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f".ir-{os.getpid()}-child-*"))


def test_the_child_converts_what_torch_computes():
    from napari_clipsam.engine.backends.convert_child import convert_in_child
    from napari_clipsam.engine.backends.openvino_runtime import compile_for_cpu

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    model = convert_in_child(module, 16)
    assert model is not None and not scratch_left()
    x = torch.rand(1, 3, 16, 16)
    out = compile_for_cpu(model, "float32", 1)({0: x.numpy()})[0]
    np.testing.assert_allclose(out, module(x).detach().numpy(), atol=1e-5)


def test_a_cancel_kills_the_child_and_leaves_nothing():
    from napari_clipsam.engine.backends.convert_child import convert_in_child
    from napari_clipsam.errors import Cancelled

    calls = []

    def poll():
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        convert_in_child(torch.nn.Conv2d(3, 4, 3), 16, poll)
    assert not scratch_left()


@pytest.mark.skipif(not os.path.isdir(f"/proc/{os.getpid()}/task"), reason="reads the child's priority in /proc")
def test_the_child_runs_below_the_callers_priority():
    """On 2 cores the child's conversion takes both; at a lower priority the window's thread still gets the CPU."""
    from napari_clipsam.engine.backends.convert_child import CHILD_NICENESS, convert_in_child

    def nice_of(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19: nice

    seen = set()

    def poll():
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            try:
                with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                    seen.update(nice_of(int(pid)) for pid in f.read().split())
            except (OSError, ValueError):  # the child ended meanwhile
                pass

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    assert convert_in_child(module, 16, poll) is not None
    mine = os.nice(0)
    assert seen and max(seen) == min(mine + CHILD_NICENESS, 19), (seen, mine)


def test_a_module_that_does_not_pickle_falls_back_with_a_reason(caplog):
    from napari_clipsam.engine.backends.convert_child import convert_in_child

    class Local(torch.nn.Module):  # a local class cannot be pickled for the child
        def forward(self, x):
            return x * 2

    with caplog.at_level(logging.WARNING):
        assert convert_in_child(Local(), 16) is None
    assert "converting in this process" in caplog.text and "cannot be handed to a child" in caplog.text
    assert not scratch_left()


def test_the_cache_stores_the_childs_files_without_serialising_again(tmp_path, monkeypatch):
    """``openvino.save_model`` holds the GIL (1.5 s for CLIP ViT-L/14@336: a frozen window): the cache stores the
    IR files the child wrote. Here the parent's ``save_model`` refuses to run; the entry is still written, read
    back by a new cache and computes what torch does, and no scratch folder is left."""
    from napari_clipsam.engine.backends.convert_child import convert_in_child
    from napari_clipsam.engine.backends.ir_cache import IRCache
    from napari_clipsam.engine.backends.openvino_runtime import compile_for_cpu, import_openvino

    def refuse(*args, **kwargs):
        raise AssertionError("the parent serialised the model again")

    monkeypatch.setattr(import_openvino(), "save_model", refuse)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    fields = {"what": "tiny conv", "input": 16}
    model = IRCache(tmp_path).get_or_convert(fields, lambda: convert_in_child(module, 16, keep_files=True), "tiny")
    assert (IRCache(tmp_path).entry(fields) / "manifest.json").is_file() and not scratch_left()
    again = IRCache(tmp_path).load(fields)
    x = torch.rand(1, 3, 16, 16)
    for m in (model, again):
        np.testing.assert_allclose(compile_for_cpu(m, "float32", 1)({0: x.numpy()})[0],
                                   module(x).detach().numpy(), atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ir-")]
