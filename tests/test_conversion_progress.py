"""Issue 22 item 1: a one-time OpenVINO conversion reports an estimate and ticks, and prints no tracer noise."""
from __future__ import annotations

import time
import warnings

import pytest

torch = pytest.importorskip("torch")

from napari_clipsam.engine.backends.conversion_progress import CAP, estimate_seconds  # noqa: E402
from napari_clipsam.engine.backends.ir_cache import IRCache  # noqa: E402


def test_a_slow_conversion_ticks_and_stays_quiet(tmp_path, recwarn):
    stages = []

    def convert():  # stands for torch tracing + openvino.convert_model: slow, and noisy
        warnings.warn("Converting a tensor to a Python boolean might cause the trace to be incorrect",
                      torch.jit.TracerWarning)
        warnings.warn_explicit("`torch.jit.trace` of this is deprecated", FutureWarning, "x.py", 1,
                               module="torch.jit._trace")
        time.sleep(1.3)
        raise RuntimeError("stop here: nothing to save")  # the stages around it are what is tested

    with pytest.raises(RuntimeError, match="stop here"):
        IRCache(tmp_path).get_or_convert({"model": "x"}, convert, "test encoder", lambda s, f: stages.append((s, f)),
                                         expected_s=2.0)
    names = {s for s, _ in stages}
    assert names == {"preparing the fast CPU model, once: test encoder (about 2 s on 2 cores; later runs load it "
                     "from the cache)"}
    ticks = [f for _, f in stages[1:]]
    assert stages[0][1] == 0.0 and len(ticks) >= 2, stages  # every half second while it ran
    assert ticks == sorted(ticks) and 0.0 < ticks[0] and ticks[-1] <= CAP
    assert not [w for w in recwarn.list if issubclass(w.category, (torch.jit.TracerWarning, FutureWarning))]


def test_the_estimate_grows_with_the_model_and_its_input():
    small, big = torch.nn.Linear(1000, 1000), torch.nn.Linear(2000, 2000)  # 1.0 M and 4.0 M parameters
    assert estimate_seconds(small, 1024) < estimate_seconds(big, 1024)
    assert estimate_seconds(big, 1024) == pytest.approx(3.0e-4 * 4.002 * 4096, rel=1e-3)  # SAM's 64×64 tokens
    assert estimate_seconds(torch.nn.Identity(), 1024) == 1.0  # never below a second
