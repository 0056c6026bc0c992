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


def test_a_module_that_does_not_pickle_falls_back_with_a_reason(caplog):
    from napari_clipsam.engine.backends.convert_child import convert_in_child

    class Local(torch.nn.Module):  # a local class cannot be pickled for the child
        def forward(self, x):
            return x * 2

    with caplog.at_level(logging.WARNING):
        assert convert_in_child(Local(), 16) is None
    assert "converting in this process" in caplog.text and "cannot be handed to a child" in caplog.text
    assert not scratch_left()
